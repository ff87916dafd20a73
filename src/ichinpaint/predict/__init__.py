"""`ichinpaint predict`: a trained model on a folder of DICOM files (docs/predict.md).

- :mod:`.inputs`: every file of the folder, any names and order: header, image ID
  (SOPInstanceUID), series, or the reason it is skipped;
- :mod:`.prepare`: one series through the stages' own library code (stacking, brain
  mask, model-grid PNGs);
- :mod:`.findings`: evaluate's decision (``models/decision.json``) applied to a map;
  native-resolution maps, overlays, per-slice table, summary;
- :mod:`.submission`: the Kaggle submission with its fill rule;
- :mod:`.run`: the whole run.
"""
