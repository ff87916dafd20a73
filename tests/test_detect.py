"""The detect stage on a tiny PNG set written to the png contract, with a tiny real model."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from model_fixtures import tiny_inpainter
from PIL import Image

from ichinpaint import cli, grid, model, volume
from ichinpaint.constants import LABELS
from ichinpaint.detection.anomaly import combine_grids
from ichinpaint.detection.inputs import SeriesImages, read_manifest
from ichinpaint.detection.runner import SCORES_COLUMNS
from ichinpaint.detection.sampler import InpaintSampler, UNetRunner
from ichinpaint.detection.series import detect_series, series_forwards, series_passes
from ichinpaint.detection.settings import DetectSettings
from ichinpaint.grid import plan_grid
from ichinpaint.manifest import COLUMNS as MANIFEST_COLUMNS
from ichinpaint.scores import SCORE_NAMES, slice_scores
from ichinpaint.windowing import model_grid_affine

IMG = 16
CANVAS = 32
NATIVE = (20, 24)  # volume axes 0 (columns) and 1 (rows)
# uid, split, use per slice, index of the slice with a bright "bleed"
SERIES = (
    ("ID_00000000aa", "val", [True, True, False, True], None),
    ("ID_00000000bb", "test", [False, True, True], 1),
    ("ID_00000000cc", "train", [True, True], None),
    ("ID_00000000dd", "test", [False, False], None),  # nothing to inpaint: an all-zero map
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_inpainter(IMG)


def brain_disc(radius: float = 5.5) -> np.ndarray:
    yy, xx = np.mgrid[:IMG, :IMG]
    return (yy - 7.5) ** 2 + (xx - 8.5) ** 2 <= radius**2


def write_dataset(root):
    """PNGs, slices.csv and source volumes as the png and nifti stages write them."""
    rows = []
    brain = brain_disc()
    for uid, split, uses, bleed in SERIES:
        n = len(uses)
        png_dir = root / "data/processed/png" / uid
        png_dir.mkdir(parents=True)
        affine = volume.affine_ras([-100, -120, 10], [1, 0, 0, 0, 1, 0], [0.9, 0.8], [0, 0, 5])
        nifti = root / "data/interim/nifti" / f"{uid}.nii.gz"
        nifti.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((*NATIVE, n), np.int16), affine), nifti)
        ids = [f"ID_{uid[-2:]}{k:07x}" for k in range(n)]
        for k, image_id in enumerate(ids):
            image = np.where(brain, 100 + 10 * k, 0).astype(np.uint8)
            if bleed == k:
                image[6:9, 7:10] = 230
            Image.fromarray(image, mode="L").save(png_dir / f"{image_id}.png")
            Image.fromarray((brain * 255).astype(np.uint8), mode="L").save(
                png_dir / f"{image_id}_mask.png"
            )
        for k, image_id in enumerate(ids):
            above, below = min(k + 1, n - 1), max(k - 1, 0)
            path = f"data/processed/png/{uid}/{{}}.png"
            label = int(bleed == k)
            rows.append(
                {
                    "image_id": image_id,
                    "series_uid": uid,
                    "patient_id": f"P_{uid[-2:]}",
                    "split": split,
                    "slice_index": k,
                    "n_slices": n,
                    "above_id": ids[above],
                    "below_id": ids[below],
                    "image_path": path.format(image_id),
                    "mask_path": path.format(f"{image_id}_mask"),
                    "above_path": path.format(ids[above]),
                    "below_path": path.format(ids[below]),
                    "midrange_fraction": 0.3 if uses[k] else 0.0,
                    "use": uses[k],
                    "drop_reason": "" if uses[k] else "midrange_below_min",
                    **{name: 0 for name in LABELS},
                    "intraparenchymal": label,
                    "any": label,
                }
            )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    manifest.to_csv(root / "data/processed/slices.csv", index=False)
    return manifest


def test_grid_plan_hides_every_brain_pixel_once_per_size_and_shift():
    brain = brain_disc()[None].astype(np.float32)
    plan = plan_grid(brain, sizes=[2, 4], offsets=True)
    assert plan.n_grids == 8
    for g in range(plan.n_grids):
        passes = [p for s, p in plan.items if plan.grid_of_pass[p] == g]
        hidden = plan.masks[passes].sum(axis=0)
        assert np.all(hidden[brain[0] > 0] == 1), g
    # passes that hide no brain pixel are not planned
    assert len(plan.items) < len(plan.passes)
    assert all((plan.masks[p] & (brain[0] > 0)).any() for _, p in plan.items)


def one_slice_series(brain: np.ndarray, seed: int) -> SeriesImages:
    """One noisy slice (brain 0.2, background -1) that is also its own neighbours."""
    rng = np.random.default_rng(seed)
    image = (np.where(brain, 0.2, -1) + rng.normal(0, 0.05, brain.shape)).astype(np.float32)
    return SeriesImages(
        image=image[None], brain=brain[None].astype(np.float32), above=image[None],
        below=image[None], slice_index=[0],
    )  # fmt: skip


def test_maps_are_zero_outside_the_brain_and_combine_modes_order(tiny):
    module, _ = tiny
    brain = brain_disc()
    images = one_slice_series(brain, seed=0)
    maps = {}
    for how in ("max", "mean"):
        settings = DetectSettings(
            strategy="onestep", noise_levels=(0.5,), sizes=(128, 256), combine=how,
            offsets=True, batch_size=256, sign="absolute", hu_gate=False,
        )  # fmt: skip
        sampler = InpaintSampler(module.diffusion, UNetRunner(module), 10)
        with torch.inference_mode():
            maps[how] = detect_series(images, sampler, settings, torch.Generator().manual_seed(0))
    for values in maps.values():
        assert values.shape == (1, IMG, IMG) and values.dtype == np.float32
        assert np.all(values[0][~brain] == 0)
        assert values[0][brain].min() >= 0 and values[0][brain].max() > 0
    assert np.all(maps["max"] >= maps["mean"] - 1e-6)
    assert (maps["max"] > maps["mean"] + 1e-4).any()


def test_mirror_averages_the_map_of_the_flipped_series_and_counts_its_calls(tiny):
    module, _ = tiny
    brain = brain_disc()  # off-centre: the mirrored series has its own grid plan
    images = one_slice_series(brain, seed=1)
    maps, calls = {}, {}
    for mirror in (False, True):
        settings = DetectSettings(
            strategy="onestep", noise_levels=(0.5,), sizes=(128,), mirror=mirror,
            offsets=True, batch_size=256, sign="absolute", hu_gate=False,
        )  # fmt: skip
        runner = UNetRunner(module)
        sampler = InpaintSampler(module.diffusion, runner, 10)
        with torch.inference_mode():
            maps[mirror] = detect_series(
                images, sampler, settings, torch.Generator().manual_seed(0)
            )
        calls[mirror] = (
            runner.forwards,
            series_forwards(series_passes(images, settings), sampler, settings),
        )
    for counted, expected in calls.values():
        assert counted == expected
    assert calls[True][0] == 2 * calls[False][0]
    assert np.all(maps[True][0][~brain] == 0)
    assert not np.allclose(maps[True], maps[False])  # a second, mirrored re-painting


def test_combine_and_scores_by_hand():
    per_grid = torch.tensor([[[[0.0, 0.5]]], [[[0.25, 0.0]]]]).reshape(1, 2, 1, 2)
    assert combine_grids(per_grid, "max").tolist() == [[[0.25, 0.5]]]
    assert torch.allclose(combine_grids(per_grid, "mean"), torch.tensor([[[0.125, 0.25]]]))
    with pytest.raises(ValueError, match="combine"):
        combine_grids(per_grid, "median")
    anomaly = np.zeros((10, 10))
    brain = np.zeros((10, 10), bool)
    brain[:5] = True  # 50 brain pixels
    anomaly[0, :3] = [0.5, 0.3, 0.15]
    anomaly[9, 9] = 9.0  # outside the brain: ignored
    scores = slice_scores(anomaly, brain)
    assert scores["score_max"] == 0.5
    assert scores["score_mean"] == pytest.approx(0.95 / 50)
    assert scores["score_top1pct"] == 0.5  # top 1 % of 50 pixels = 1 pixel
    assert scores["score_area_0.1"] == pytest.approx(3 / 50)
    assert scores["score_area_0.2"] == pytest.approx(2 / 50)
    assert slice_scores(anomaly, np.zeros_like(brain)) == dict.fromkeys(SCORE_NAMES, 0.0)


def test_model_grid_affine_maps_model_pixels_to_the_native_pixels_they_cover():
    source = np.diag([0.5, 0.5, 5.0, 1.0])
    # native 20 x 24 padded to 32 (offsets 6 and 4), resized to 16: scale 2
    affine = model_grid_affine(source, (20, 24, 3), canvas=32, img_size=16)
    # model (col 0, row 0) covers canvas 0..1 -> centre 0.5 -> native col -5.5, row -3.5
    assert np.allclose(affine @ [0, 0, 0, 1], source @ [0.5 - 6, 0.5 - 4, 0, 1])
    assert np.allclose(model_grid_affine(source, (32, 32, 3), 32, 32), source)


def test_detect_stage_writes_the_contract(tmp_path, tiny):
    module, spec = tiny
    manifest = write_dataset(tmp_path)
    ckpt = tmp_path / "models/inpainter.ckpt"
    model.save_inpainter(ckpt, module.state_dict(), spec)
    out, metrics_path = tmp_path / "data/detections", tmp_path / "metrics/detect.json"
    argv = [
        "detect", "--slices", str(tmp_path / "data/processed/slices.csv"), "--model", str(ckpt),
        "--nifti", str(tmp_path / "data/interim/nifti"), "--canvas", str(CANVAS),
        "--root", str(tmp_path), "--out", str(out), "--metrics", str(metrics_path),
        "--strategy", "onestep", "--noise_levels", "0.5", "--sizes", "32", "64",
        "--no-offsets", "--batch_size", "16", "--n_overlays", "2",
        "--sign", "absolute", "--no-hu_gate",  # these volumes hold no HU: the study's |diff|
    ]  # fmt: skip
    assert cli.main(argv) == 0

    detected = manifest[manifest["split"].isin(["val", "test"])]
    used = detected[detected["use"]]
    brain = brain_disc()
    # one float32 volume per val/test series, none for train
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        f"{uid}.nii.gz" for uid, split, _, _ in SERIES if split != "train"
    ]
    scores = pd.read_csv(out / "scores.csv", dtype={"image_id": str})
    assert list(scores.columns) == list(SCORES_COLUMNS)
    assert sorted(scores["image_id"]) == sorted(used["image_id"])
    for uid, split, uses, bleed in SERIES:
        if split == "train":
            continue
        image = nib.load(out / f"{uid}.nii.gz")
        data = np.asarray(image.dataobj)
        assert data.dtype == np.float32 and data.shape == (IMG, IMG, len(uses))
        source = nib.load(tmp_path / "data/interim/nifti" / f"{uid}.nii.gz")
        assert np.allclose(
            image.affine, model_grid_affine(source.affine, source.shape, CANVAS, IMG)
        )
        for k, use in enumerate(uses):
            slice_map = volume.slice_image(data, k)
            if not use:
                assert not slice_map.any()
                continue
            assert not slice_map[~brain].any() and slice_map[brain].max() > 0
            row = scores[(scores["series_uid"] == uid) & (scores["slice_index"] == k)].iloc[0]
            assert row["score_max"] == pytest.approx(slice_map[brain].max(), rel=1e-5)
            assert row["any"] == int(bleed == k) == row["intraparenchymal"]
            assert row["split"] == split

    metrics = json.loads(metrics_path.read_text())
    for key in ("strategy", "forwards_per_slice", "seconds_per_series", "seconds_total"):
        assert key in metrics
    assert metrics["strategy"] == "onestep" and metrics["series"] == 3
    assert metrics["slices"] == len(used)
    assert metrics["slices_not_used"] == int((~detected["use"]).sum())
    # analytical count: passes of the 2 px and 4 px grids touching the brain, 1 level
    passes = grid.all_passes([2, 4], offsets=False)
    touching = sum(1 for _ in grid.passes_touching(brain, passes))
    assert metrics["forwards_total"] == touching * len(used)
    assert metrics["forwards_per_slice"] == touching
    overlays = sorted((out / "overlays").glob("*.png"))
    assert [p.name.split("_")[0] for p in overlays] == ["bleed", "healthy"]
    assert Image.open(overlays[0]).size[0] > 300


def test_bad_inputs_name_the_file(tmp_path, tiny):
    manifest = write_dataset(tmp_path)
    csv = tmp_path / "data/processed/slices.csv"
    manifest.drop(columns=["use"]).to_csv(tmp_path / "no_use.csv", index=False)
    with pytest.raises(ValueError, match=r"no_use\.csv.*use"):
        read_manifest(tmp_path / "no_use.csv", ["val"])
    manifest.assign(use="maybe").to_csv(tmp_path / "bad_use.csv", index=False)
    with pytest.raises(ValueError, match="bad_use.csv"):
        read_manifest(tmp_path / "bad_use.csv", ["val"])
    assert len(read_manifest(csv, ["test"])) == 5
    missing = tmp_path / manifest.loc[0, "image_path"]
    missing.unlink()
    module, spec = tiny
    ckpt = tmp_path / "m.ckpt"
    model.save_inpainter(ckpt, module.state_dict(), spec)
    argv = ["detect", "--slices", str(csv), "--model", str(ckpt), "--root", str(tmp_path)]
    argv += ["--out", str(tmp_path / "det"), "--metrics", str(tmp_path / "m.json"), "--nifti", ""]
    with pytest.raises(FileNotFoundError, match=missing.name):
        cli.main(argv)
    assert not (tmp_path / "det").exists()  # nothing half-written
