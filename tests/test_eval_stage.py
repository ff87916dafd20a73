"""The evaluate stage end to end on a tiny hand-made set of real files.

Four test series (two with bleeds, two healthy, one with a false-positive blob) and
two healthy validation series, 24 px model grid, 48 px native ground truth. The
maps are built so the right answers are known exactly.
"""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ichinpaint import cli
from ichinpaint.constants import LABELS, SUBTYPE_CODES, SUBTYPES
from ichinpaint.volume import stack_slices

SIZE, CANVAS, N = 24, 48, 4
BLOB = (slice(6, 10), slice(12, 16))  # [row, col] on the model grid, deliberately off-diagonal
BLOB_NATIVE = (slice(12, 20), slice(24, 32))


def brain_disc() -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - 11.5) ** 2 + (xx - 11.5) ** 2 <= 9**2


# series uid -> (patient, split, {slice: subtype}, {slice: fp blob}, unused slices)
SERIES = {
    "ID_a000000001": ("PA", "val", {}, {}, set()),
    "ID_a000000002": ("PB", "val", {}, {}, {3}),
    "ID_b000000001": ("PC", "test", {1: "intraparenchymal", 2: "intraparenchymal"}, {}, set()),
    "ID_b000000002": ("PD", "test", {1: "subdural"}, {}, {3}),
    "ID_b000000003": ("PE", "test", {}, {2}, set()),
    "ID_b000000004": ("PF", "test", {}, {}, set()),
}


def anomaly_slice(lesion: bool, scale: float = 1.0) -> np.ndarray:
    brain = brain_disc()
    image = np.where(brain, 0.02, 0.0).astype(np.float32)
    rim = brain & ~np.pad(brain[1:-1, 1:-1], 1)  # outermost ring... plus anything next to it:
    ring = brain.copy()
    ring[1:-1, 1:-1] &= ~(brain[:-2, 1:-1] & brain[2:, 1:-1] & brain[1:-1, :-2] & brain[1:-1, 2:])
    image[ring | rim] = 0.5  # skull-rim artefact, removed by erosion
    if lesion:
        image[BLOB] = 0.6
    return image * scale


def build(root, *, with_truth=True, test_scale=1.0, series=None):
    rows = []
    for s_i, (uid, (patient, split, bleeds, fps, unused)) in enumerate((series or SERIES).items()):
        png_dir = root / "data/processed/png" / uid
        png_dir.mkdir(parents=True)
        maps, truth, ids = [], [], []
        for k in range(N):
            image_id = f"ID_{s_i:02x}{k:07x}"
            ids.append(image_id)
            ct = (np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 200).astype(np.uint8)
            Image.fromarray(ct).save(png_dir / f"{image_id}.png")
            Image.fromarray((brain_disc() * 255).astype(np.uint8)).save(
                png_dir / f"{image_id}_mask.png"
            )
            used = k not in unused
            has_blob = used and (k in bleeds or k in fps)
            scale = test_scale if split == "test" else 1.0
            maps.append(
                anomaly_slice(has_blob, scale) if used else np.zeros((SIZE, SIZE), np.float32)
            )
            native = np.zeros((CANVAS, CANVAS), np.uint8)
            if k in bleeds:
                native[BLOB_NATIVE] = SUBTYPE_CODES[bleeds[k]]
            truth.append(native)
            labels = {name: int(bleeds.get(k) == name) for name in SUBTYPES}
            labels["any"] = int(k in bleeds)
            rows.append(
                {
                    "image_id": image_id,
                    "series_uid": uid,
                    "patient_id": patient,
                    "split": split,
                    "slice_index": k,
                    "n_slices": N,
                    "image_path": f"data/processed/png/{uid}/{image_id}.png",
                    "mask_path": f"data/processed/png/{uid}/{image_id}_mask.png",
                    "use": used,
                    **labels,
                }
            )
        det = root / "data/detections"
        det.mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(stack_slices(maps).astype(np.float32), np.eye(4)), det / f"{uid}.nii.gz"
        )
        if with_truth:
            gt = root / "raw/ground_truth" / uid
            gt.mkdir(parents=True)
            nib.save(nib.Nifti1Image(stack_slices(truth), np.eye(4)), gt / "lesion.nii.gz")
            (gt / "ids.json").write_text(json.dumps({"image_ids": ids}))
    pd.DataFrame(rows).to_csv(root / "data/processed/slices.csv", index=False)
    (root / "metrics").mkdir()
    (root / "metrics/detect.json").write_text(json.dumps({"seconds_per_series": 12.5}))


def evaluate_paths(root) -> list[str]:
    """`ichinpaint evaluate` with every input and output inside `root` (never the repository)."""
    argv = ["evaluate", "--root", str(root), "--canvas", str(CANVAS), "--img_size", str(SIZE)]
    for name, rel in [
        ("slices", "data/processed/slices.csv"),
        ("detections", "data/detections"),
        ("detect_metrics", "metrics/detect.json"),
        ("ground_truth", "raw/ground_truth"),
        ("metrics", "metrics/detection.json"),
        ("plots", "metrics/plots"),
        ("gallery", "metrics/gallery"),
        ("submission", "data/submission.csv"),
        ("decision", "models/decision.json"),
    ]:
        argv += [f"--{name}", str(root / rel)]
    return argv


def run_stage(root, *extra):
    argv = evaluate_paths(root)
    argv += [
        "--median_size",
        "1",
        "--erosion_px",  # the hand-computed case has a skull-rim artefact for erosion to remove
        "2",
        # the hand-computed case names its decision rule instead of relying on the defaults
        "--normalize",
        "none",
        "--no-consistency_3d",
        "--reduction",
        "score_top1pct",
        "--n_splits",
        "4",
        "--gallery_per_category",
        "1",
        "--n_jobs",
        "1",
        *extra,
    ]
    assert cli.main(argv) == 0
    return json.loads((root / "metrics/detection.json").read_text())


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    build(root)
    return root, run_stage(root)


def test_metrics_are_the_hand_computed_ones(evaluated):
    _, m = evaluated
    assert m["pixel_threshold"] == pytest.approx(0.02)  # the healthy background, rim eroded away
    assert m["slice_sensitivity"] == 1.0
    # used negatives: PC 2, PD 2 (slice 3 unused), PE 4 (one alarm), PF 4 -> 11 of 12
    assert m["slice_specificity"] == pytest.approx(11 / 12)
    assert m["sensitivity_intraparenchymal"] == 1.0 and m["sensitivity_subdural"] == 1.0
    assert m["sensitivity_epidural"] is None  # no epidural bleed in the test set
    # pooled over the test set: 3 bleeds of 16 px found exactly, plus the 16 px false
    # alarm on a healthy series: 2 * 48 / (64 + 48)
    assert m["dice"] == pytest.approx(6 / 7)
    assert m["dice_upper_bound"] == pytest.approx(6 / 7)  # the alarm is as bright as the bleeds
    assert m["pixel_auroc"] < 1.0 and m["pixel_auprc"] == pytest.approx(0.75)
    assert m["fp_components_per_healthy_series"] == pytest.approx(0.5)
    assert m["seconds_per_series"] == 12.5
    assert m["test_series"] == 4 and m["test_slices"] == 15 and m["test_positive_slices"] == 3
    assert m["test_slices_unused"] == 1 and m["submission_images"] == 16
    assert m["submission_images"] == m["test_slices"] + m["test_slices_unused"]  # counts reconcile
    assert m["val_healthy_series"] == 2 and m["val_healthy_slices"] == 7
    assert m["val_slice_fpr"] == 0.0
    assert 0 <= m["rsna_weighted_logloss_any"] < 10
    assert m["logloss_eps"] == 1e-15


def test_outputs_exist_in_their_formats(evaluated):
    root, _ = evaluated
    sub = pd.read_csv(root / "data/submission.csv")
    assert len(sub) == 16 * 6
    assert list(sub["ID"][:6].str.rsplit("_", n=1).str[1]) == list(LABELS)
    assert sub["Label"].between(0, 1).all()
    for name in ("slice_roc", "slice_pr", "pixel_roc", "pixel_pr"):
        curve = pd.read_csv(root / f"metrics/plots/{name}.csv")
        assert len(curve) >= 2 and len(curve) <= 500
    pictures = sorted(p.name for p in (root / "metrics/gallery").glob("*.png"))
    assert any(p.startswith("tp_intraparenchymal_") for p in pictures)
    assert any(p.startswith("tp_subdural_") for p in pictures)
    assert [p for p in pictures if p.startswith("fp_")] == ["fp_ID_040000002.png"]
    assert Image.open(root / "metrics/gallery" / pictures[0]).size[0] > 100


def test_thresholds_do_not_move_when_test_data_changes(tmp_path, evaluated):
    _, m = evaluated
    build(tmp_path, test_scale=10.0)
    changed = run_stage(tmp_path)
    assert changed["pixel_threshold"] == m["pixel_threshold"]


def test_without_ground_truth_pixel_metrics_are_absent(tmp_path):
    build(tmp_path, with_truth=False)
    m = run_stage(
        tmp_path, "--threshold_mode", "fpr", "--target_fpr", "0.0", "--reduction", "score_max"
    )
    assert "dice" not in m and "pixel_auroc" not in m
    assert pd.read_csv(tmp_path / "metrics/plots/pixel_roc.csv").empty
    # fpr mode: healthy validation max is the rim-eroded background 0.02; bleeds score 0.6
    assert m["slice_threshold"] == pytest.approx(0.02)
    assert m["slice_sensitivity"] == 1.0
    # the false alarm ties with the 3 bleeds: 1 - 0.5 * 3 / (3 * 12)
    assert m["slice_auroc"] == pytest.approx(23 / 24)
    assert m["slice_specificity"] == pytest.approx(11 / 12)


def test_missing_detection_volume_is_named(tmp_path):
    build(tmp_path)
    (tmp_path / "data/detections/ID_b000000003.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="ID_b000000003"):
        run_stage(tmp_path)


def test_a_test_set_without_bleeds_gives_nulls_not_crashes(tmp_path):
    healthy_only = {
        uid: (p, split, {}, fps, unused) for uid, (p, split, _, fps, unused) in SERIES.items()
    }
    build(tmp_path, series=healthy_only)
    m = run_stage(tmp_path)
    for key in ("slice_auroc", "slice_ap", "slice_sensitivity", "pixel_auroc", "dice_upper_bound"):
        assert m[key] is None, key
    assert m["dice"] == 0.0  # the false alarm against an empty truth
    assert m["slice_specificity"] == pytest.approx(14 / 15)
    assert m["test_positive_slices"] == 0
    sub = pd.read_csv(tmp_path / "data/submission.csv")
    assert sub["Label"].between(0, 1).all() and len(sub) == 16 * 6


def test_decision_artifact_freezes_what_evaluate_chose(evaluated):
    from ichinpaint.evaluation.decision import read_decision

    root, m = evaluated
    decision = read_decision(root / "models/decision.json")
    assert decision.version == 1
    assert decision.thresholds["pixel_threshold"] == pytest.approx(m["pixel_threshold"])
    assert decision.thresholds["mode"] == m["threshold_mode"]
    assert decision.postprocess == {
        "erosion_px": 2,
        "median_size": 1,
        "min_component_px": 4,
        "consistency_3d": False,
    }
    assert (decision.canvas, decision.img_size, decision.reduction) == (
        CANVAS,
        SIZE,
        "score_top1pct",
    )
    manifest = pd.read_csv(root / "data/processed/slices.csv")
    test = manifest[manifest["split"] == "test"]
    # fitted on every labelled test slice, and only on those; the series are named
    cal = decision.calibrator
    assert cal.procedure == "heldout-test-platt"
    assert cal.series_uids == tuple(sorted(test["series_uid"].unique()))
    assert cal.n_slices == len(test) and cal.n_positive == int(test["any"].sum())
    assert cal.slope > 0  # bleeds score higher than healthy slices in the hand-made case
    assert decision.detect is None  # this hand-made case has no detect settings.json


def test_detection_volume_of_the_wrong_shape_is_named(tmp_path):
    build(tmp_path)
    path = tmp_path / "data/detections/ID_b000000004.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((SIZE, SIZE, N - 1), np.float32), np.eye(4)), path)
    with pytest.raises(ValueError, match=r"ID_b000000004\.nii\.gz: volume has 3 slices"):
        run_stage(tmp_path)


def test_manifest_without_labels_is_refused_by_name(tmp_path):
    build(tmp_path)
    manifest = tmp_path / "data/processed/slices.csv"
    pd.read_csv(manifest).drop(columns=["any"]).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"slices\.csv: missing columns \['any'\]"):
        run_stage(tmp_path)


def test_threshold_selection_never_opens_a_test_file(tmp_path):
    from ichinpaint.evaluation import pipeline
    from ichinpaint.evaluation import series as evaluation_series
    from ichinpaint.evaluation.settings import Settings

    build(tmp_path)
    for path in (tmp_path / "data/detections").glob("ID_b*.nii.gz"):
        path.unlink()  # every test volume gone: choosing thresholds must not notice
    paths = pipeline.Paths(
        slices=tmp_path / "data/processed/slices.csv",
        detections=tmp_path / "data/detections",
        detect_metrics=tmp_path / "unused",
        ground_truth=tmp_path / "raw/ground_truth",
        metrics=tmp_path / "unused",
        plots=tmp_path / "unused",
        gallery=tmp_path / "unused",
        submission=tmp_path / "unused",
        root=tmp_path,
    )
    settings = Settings(median_size=1, canvas=CANVAS, img_size=SIZE, n_jobs=1)
    frame = evaluation_series.read_manifest(paths.slices)
    validation = pipeline.healthy_validation(frame, paths, settings)
    assert set(validation.series_uids) == {"ID_a000000001", "ID_a000000002"}
    assert set(validation.splits) == {"val"}
