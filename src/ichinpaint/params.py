"""Ranges of stage settings, checked before a stage does any work.

Each stage module declares ``PARAM_RULES`` next to its options: option name -> `Rule`.
The CLI checks the parsed options against them (and calls the module's optional
``check_args(args)`` for rules that join several options) before ``run``, so a bad value
stops the stage in a second, with one line naming the option, the value and the range,
instead of after the model has run or, worse, silently.

List options (``nargs``) are checked element by element and must not be empty unless
the rule says so. Under DVC an empty list in params.yaml disappears from the command
line (DVC unpacks ``[]`` to nothing), so the CLI treats a list option missing from a
DVC-run command as an empty list, not as "use the default" (see `ichinpaint.cli`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A setting outside its declared range."""


@dataclass(frozen=True)
class Rule:
    """`check(value)` must hold; `text` completes "must be ..." in the error."""

    check: Callable[[Any], bool]
    text: str
    allow_empty: bool = False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= low, f">= {low}")


def greater_than(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v > low, f"> {low}")


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """``low <= v <= high``, with either end open on request."""

    def check(v: Any) -> bool:
        if not _number(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return Rule(check, f"in {left}{low}, {high}{right}")


def one_of(choices: Iterable[Any]) -> Rule:
    choices = tuple(choices)
    return Rule(lambda v: v in choices, f"one of {list(choices)}")


def any_of(*rules: Rule) -> Rule:
    return Rule(lambda v: any(r.check(v) for r in rules), " or ".join(r.text for r in rules))


def multiple_of(step: int, low: int) -> Rule:
    return Rule(
        lambda v: _number(v) and v >= low and v % step == 0, f"a multiple of {step}, >= {low}"
    )


def maybe_empty(rule: Rule) -> Rule:
    """The same rule for each element of a list that may also be empty."""
    return Rule(rule.check, rule.text, allow_empty=True)


N_JOBS = any_of(one_of([-1]), at_least(1))  # -1: all cores
SEED = between(0, 2**32 - 1)  # numpy's seed range


def check_value(name: str, value: Any, rule: Rule) -> None:
    """ParamError naming ``--name``, the value and the rule when `value` breaks it."""
    if isinstance(value, list | tuple):
        if not value and not rule.allow_empty:
            raise ParamError(f"--{name}: empty list; must hold at least one value {rule.text}")
        bad = [v for v in value if not rule.check(v)]
        if bad:
            raise ParamError(f"--{name} {bad[0]!r}: every value must be {rule.text}")
        return
    if not rule.check(value):
        raise ParamError(f"--{name} {value!r}: must be {rule.text}")


def validate(args: argparse.Namespace, rules: dict[str, Rule]) -> None:
    """Check every option that has a rule; the first violation raises ParamError."""
    for name, rule in rules.items():
        if hasattr(args, name):
            check_value(name, getattr(args, name), rule)


def require(condition: bool, message: str) -> None:
    """For a module's ``check_args``: ParamError with `message` unless `condition`."""
    if not condition:
        raise ParamError(message)
