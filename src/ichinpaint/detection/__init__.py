"""Anomaly detection by grid inpainting (the `detect` stage's library), one concern a module.

- :mod:`.settings`: `DetectSettings`, the ``detect`` params declared once, and the
  settings record evaluate's decision keeps;
- :mod:`.strategies`: one object per re-painting strategy (`Repaint`, the study's;
  `Partial`, `OneStep`; the no-model `HuThreshold`), each holding its schedule;
- :mod:`.sampler`: DDIM / RePaint / one-step inpainting on mediffusion's diffusion
  object, with every UNet call counted and batched;
- :mod:`.inputs`: the slice manifest and a series' model-grid PNGs;
- :mod:`.series`: one series through the model (grid plan from ``ichinpaint.grid``,
  mixed batches, the HU gate of :mod:`.hu`);
- :mod:`.anomaly`: differences in brain-window units, combination over grids;
- :mod:`.geometry`: the maps' volume layout and affine;
- :mod:`.overlays`: the overlay PNGs;
- :mod:`.runner`: parts into series stores (:mod:`.shards`) and the merge into the
  stage's outputs (maps, scores.csv with ``ichinpaint.scores``, metrics).
"""
