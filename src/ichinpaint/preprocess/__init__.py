"""Preprocessing: the stages from RSNA-layout DICOM files to model-grid PNGs, one module each.

- `filter`: the per-image table (labels, headers, patient split, exclusions with reasons);
- `nifti`: one int16 HU NIfTI volume per series (+ sidecar), or the reason it is refused;
- `mask`: a brain mask per volume, Dice and the overlay sheet, with the extraction
  methods in `brainmask`;
- `png`: brain-window PNGs on the model grid and the slice manifest's rows.

Each module holds its stage's settings dataclass and the per-item work; the stage
modules in ``ichinpaint.stages`` only parse options and write outputs. `predict` runs
the same functions on a folder of new DICOM files.
"""
