"""Anomaly detection by grid inpainting: sampler, strategies, anomaly maps, series runner.

- :mod:`.sampler`: DDIM / RePaint / one-step inpainting on mediffusion's diffusion
  object, with every UNet call counted and batched;
- :mod:`.strategies`: ``repaint`` (the study), ``partial``, ``onestep``;
- :mod:`.anomaly`: differences in brain-window units, combination over grids;
- :mod:`.runner`: whole series in large mixed batches, NIfTI maps, scores.csv (with
  ``ichinpaint.scores``), overlays.
"""
