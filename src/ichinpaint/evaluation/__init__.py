"""Turning anomaly maps into decisions and measuring them (the `evaluate` stage's library).

- `settings`: the ``evaluate`` params declared once (stage options, review app);
- `series`: one series read, post-processed, scored and measured (returns its arrays);
- `report`: the metrics assembled from the per-series results;
- `pipeline`: the order of events (thresholds on healthy validation, then test);
- `postprocess`: erosion, median filter, components, 3-D consistency, slice scores
  (shared with the review app);
- `thresholds`: decision thresholds, chosen on healthy validation data only;
- `calibration`: patient-level cross-fitted slice probabilities;
- `metrics`: metric functions defined on degenerate inputs;
- `submission`, `plots`, `gallery`: the Kaggle CSV, DVC plot tables, overlay PNGs;
- `decision`: the artifact predict applies.
"""
