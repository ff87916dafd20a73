"""Training of the healthy-brain inpainting model: data, masks, augmentation, Lightning loop.

``loop.train`` is the entry point the ``train`` stage calls; the other modules are the
pieces it is built from (and what the tests exercise one by one).
"""
