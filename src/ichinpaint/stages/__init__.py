"""Thin stage modules: parse options, call the library, write outputs atomically."""
