"""User lesion masks for real data, and the location normaliser, through the evaluate stage."""

import json
import shutil

import numpy as np
import pytest
from test_eval_stage import build, run_stage

from ichinpaint.evaluation.normalize import (
    N_CELLS,
    Normalizer,
    cell_index,
    fit_normalizer,
    slice_levels,
)


def test_user_lesion_masks_give_the_synthetic_pixel_metrics(tmp_path):
    """The synthetic ground truth rewritten in the user layout: by series UID (the nifti
    stage's grid) for one series, by image IDs (any name + JSON) for the others."""
    build(tmp_path)
    reference = run_stage(tmp_path)
    gt = tmp_path / "raw/ground_truth"
    masks = tmp_path / "masks"
    masks.mkdir()
    for i, series_dir in enumerate(sorted(p for p in gt.iterdir() if p.is_dir())):
        if i == 2:
            shutil.copy(series_dir / "lesion.nii.gz", masks / f"{series_dir.name}.nii.gz")
        else:
            shutil.copy(series_dir / "lesion.nii.gz", masks / f"case{i}.nii.gz")
            shutil.copy(series_dir / "ids.json", masks / f"case{i}.json")
    shutil.rmtree(gt)
    gt.mkdir()
    user = run_stage(tmp_path, "--lesion_masks", str(masks))
    for key in ("pixel_auroc", "pixel_auprc", "dice", "pixel_series_with_truth"):
        assert user[key] == pytest.approx(reference[key]), key
    assert reference["pixel_series_with_truth"] == 4


def test_an_image_listed_by_two_mask_files_is_refused(tmp_path):
    build(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    series_dir = next(p for p in sorted((tmp_path / "raw/ground_truth").iterdir()) if p.is_dir())
    for name in ("a", "b"):
        shutil.copy(series_dir / "lesion.nii.gz", masks / f"{name}.nii.gz")
        shutil.copy(series_dir / "ids.json", masks / f"{name}.json")
    with pytest.raises(ValueError, match=r"b\.json.*also listed"):
        run_stage(tmp_path, "--lesion_masks", str(masks))


def test_fp_components_by_kind_add_up(tmp_path):
    build(tmp_path)
    metrics = run_stage(tmp_path)
    kinds = {k: v for k, v in metrics.items() if k.startswith("fp_components_") and "per" not in k}
    assert "fp_components_rim" in kinds and "fp_components_other" in kinds
    assert sum(kinds.values()) == pytest.approx(metrics["fp_components_per_healthy_series"])
    assert metrics["fp_components_per_healthy_series"] > 0  # the hand-built blob


def _series(rng, n=6, size=32, rim_noise=0.4, inner_noise=0.04):
    yy, xx = np.mgrid[:size, :size]
    radii = [6, 10, 13, 13, 12, 7][:n]
    brains = np.stack([np.hypot(yy - 15.5, xx - 15.5) < r for r in radii])
    cells = cell_index(brains)
    rim = (cells % 4 == 0) & (cells >= 0)
    maps = np.where(rim, rng.uniform(0, rim_noise, brains.shape), 0.0)
    maps = np.where(brains & ~rim, rng.uniform(0, inner_noise, brains.shape), maps)
    return maps.astype(np.float32), brains


def test_location_normaliser_evens_out_the_rim_and_keeps_a_rim_bleed():
    rng = np.random.default_rng(0)
    values, cells = [], []
    for _ in range(20):
        maps, brains = _series(rng)
        c = cell_index(brains)
        values.append(maps[c >= 0])
        cells.append(c[c >= 0])
    normalizer = fit_normalizer("location", np.concatenate(values), np.concatenate(cells))
    assert len(normalizer.scales) == N_CELLS
    maps, brains = _series(rng)
    c = cell_index(brains)
    rim, inner = (c % 4 == 0) & (c >= 0), (c % 4 == 3)
    assert maps[rim].max() > 5 * maps[inner].max()  # raw: the rim dominates
    normalized = normalizer.apply(maps, brains)
    assert normalized[rim].max() < 1.2 and normalized[inner].max() < 1.2
    bleed = maps.copy()
    k, row = 3, np.flatnonzero(rim[3].any(axis=1))[0]
    bleed[k, row][rim[k, row]] = 0.9  # extra-axial blood: brighter than any healthy rim
    assert normalizer.apply(bleed, brains)[k, row][rim[k, row]].min() > 1.5
    assert not normalized[~brains].any()
    assert Normalizer.from_json(json.loads(json.dumps(normalizer.to_json()))) == normalizer
    assert np.array_equal(Normalizer("none").apply(maps, brains), maps)


def test_slice_level_is_brain_area_relative_to_the_largest_section():
    brains = np.zeros((3, 4, 4), bool)
    brains[0, :1, :2] = True
    brains[1] = True
    assert slice_levels(brains).tolist() == [2 / 16, 1.0, 0.0]


def test_evaluate_with_location_normalisation_runs_and_thresholds_on_normalised_values(tmp_path):
    build(tmp_path)
    plain = run_stage(tmp_path)
    normalized = run_stage(tmp_path, "--normalize", "location")
    assert plain["pixel_threshold"] != normalized["pixel_threshold"]
    assert normalized["slice_auroc"] is not None
