"""Review app: its logic and the page itself (Streamlit's AppTest) on a tiny real output set.

The output set is written the way the pipeline writes it: brain-window PNGs and
masks, a slices.csv, float32 NIfTI anomaly volumes in the ``data[col, row, k]``
layout, native-matrix ground truth with ids.json, a params.yaml with comments.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ichinpaint.app import data, view
from ichinpaint.app.params import read_params, save_evaluate_params
from ichinpaint.constants import LABELS
from ichinpaint.evaluation.settings import Settings
from ichinpaint.volume import stack_slices

SIZE = 32
N_SLICES = 4
SCRIPT = Path(data.__file__).with_name("streamlit_app.py")
# Series: a healthy validation series (thresholds), a bleeding test series with
# ground truth, a healthy test series with one false-positive blob, and a test
# series the detect stage never wrote.
VAL, BLEED, HEALTHY, NO_MAP = "ID_00000000a1", "ID_00000000b2", "ID_00000000c3", "ID_00000000d4"
BLEED_SLICES = (1, 2)
PARAMS = """\
# top comment: kept by the app
data:
  source: synthetic
  raw_dir: data/raw

png:
  canvas: 32
  img_size: 32

evaluate:
  threshold_mode: percentile  # percentile | fpr
  percentile: 99.5
  target_fpr: 0.05
  erosion_px: 2
  median_size: 3
  min_component_px: 4
  consistency_3d: false       # adjacent-slice check
  reduction: score_top1pct
  normalize: none
  n_splits: 2                 # not an app control
"""


def disc(radius: float = 13.0) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    c = (SIZE - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius**2


def anomaly_maps(uid: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Low noise inside the brain; a strong 6x6 bleed blob or a weaker 3x3 false alarm."""
    maps = []
    for k in range(N_SLICES):
        a = np.where(disc(), rng.uniform(0.0, 0.05, (SIZE, SIZE)), 0.0).astype(np.float32)
        if uid == BLEED and k in BLEED_SLICES:
            a[10:16, 10:16] = 0.6
        if uid == HEALTHY and k == 0:
            a[18:21, 18:21] = 0.4  # with the noise around it, about 12 px after the median filter
        maps.append(a)
    return maps


def write_output_set(root: Path) -> Path:
    """A complete tiny set of pipeline outputs under `root`; returns root."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(PARAMS)
    rows = []
    series = [
        (VAL, "val", "P1"),
        (BLEED, "test", "P2"),
        (HEALTHY, "test", "P3"),
        (NO_MAP, "test", "P4"),
    ]
    for uid, split, patient in series:
        png_dir = root / "data/processed/png" / uid
        png_dir.mkdir(parents=True)
        ct = np.where(disc(), 110, 0).astype(np.uint8)
        for k in range(N_SLICES):
            image_id = f"ID_{uid[-2:]}{k:07x}"
            Image.fromarray(ct).save(png_dir / f"{image_id}.png")
            Image.fromarray((disc() * 255).astype(np.uint8)).save(png_dir / f"{image_id}_mask.png")
            bleed = int(uid == BLEED and k in BLEED_SLICES)
            labels = dict.fromkeys(LABELS, 0) | {"intraparenchymal": bleed, "any": bleed}
            rows.append(
                {
                    "image_id": image_id,
                    "series_uid": uid,
                    "patient_id": patient,
                    "split": split,
                    "slice_index": k,
                    "n_slices": N_SLICES,
                    "image_path": f"data/processed/png/{uid}/{image_id}.png",
                    "mask_path": f"data/processed/png/{uid}/{image_id}_mask.png",
                    "use": True,
                    **labels,
                }
            )
        if uid != NO_MAP:
            volume = stack_slices(anomaly_maps(uid, rng)).astype(np.float32)
            (root / "data/detections").mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), root / f"data/detections/{uid}.nii.gz")
    pd.DataFrame(rows).to_csv(root / "data/processed/slices.csv", index=False)
    truth_dir = root / "data/raw/ground_truth" / BLEED
    truth_dir.mkdir(parents=True)
    lesion = np.zeros((N_SLICES, SIZE, SIZE), np.uint8)
    for k in BLEED_SLICES:
        lesion[k, 10:16, 10:16] = 2
    nib.save(nib.Nifti1Image(stack_slices(lesion), np.eye(4)), truth_dir / "lesion.nii.gz")
    ids = [r["image_id"] for r in rows if r["series_uid"] == BLEED]
    (truth_dir / "ids.json").write_text(json.dumps({"image_ids": ids}))
    (root / "metrics/reports").mkdir(parents=True)
    (root / "metrics/reports/detect.json").write_text(json.dumps({"seconds_per_series": 1.0}))
    (root / "metrics/reports/detection.json").write_text(
        json.dumps({"threshold_mode": "percentile", "pixel_threshold": 0.05})
    )
    return root


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return write_output_set(tmp_path)


def paths_of(root: Path) -> data.AppPaths:
    return data.AppPaths.under(root, ground_truth="data/raw/ground_truth")


# The settings these tests were written for (the page's own defaults before it used
# evaluate's Settings): no normalisation, no 3-D check, top-1% reduction.
PAGE_SETTINGS = dict(
    normalize="none", consistency_3d=False, reduction="score_top1pct", canvas=SIZE, img_size=SIZE
)


def page_choice(**settings) -> data.Choice:
    return data.Choice(Settings(**{**PAGE_SETTINGS, **settings}))


def analyse(root: Path, uid: str, **settings) -> data.SeriesResult:
    paths = paths_of(root)
    manifest = data.load_manifest(paths)
    choice = page_choice(**settings)
    validation = data.pool_validation(manifest, paths, choice.settings)
    decision = data.decide(validation, choice)
    return data.analyse_series(manifest, paths, uid, choice.settings, decision.thresholds)


# ---------------------------------------------------------------- logic


def test_bleeding_series_is_flagged_where_labelled_and_truth_is_on_the_grid(outputs):
    result = analyse(outputs, BLEED)
    counts = data.series_counts(result.table)
    assert counts["bleed_slices"] == 2 and counts["bleed_slices_flagged"] == 2
    assert counts["fp_slices_healthy"] == 0
    assert list(result.table["predicted"]) == [k in BLEED_SLICES for k in range(N_SLICES)]
    assert result.truth is not None and result.truth[1, 12, 12] and not result.truth[0].any()
    # Detections overlap the truth on the model grid ([k, row, col] orientation).
    assert (result.labels[1] > 0)[result.truth[1]].mean() > 0.5
    assert result.ct.shape == (N_SLICES, SIZE, SIZE)


def test_minimum_component_size_removes_the_false_alarm(outputs):
    small = data.series_counts(analyse(outputs, HEALTHY, min_component_px=4).table)
    large = data.series_counts(analyse(outputs, HEALTHY, min_component_px=16).table)
    assert small["fp_components_healthy"] == 1 and small["flagged_slices"] == 1
    assert large["fp_components_healthy"] == 0 and large["flagged_slices"] == 0


def test_series_without_anomaly_map_is_reported(outputs):
    paths = paths_of(outputs)
    overview = data.series_overview(data.load_manifest(paths), paths, ("test",))
    assert overview.iloc[0]["series_uid"] == BLEED  # bleeding series first
    assert not overview.set_index("series_uid").loc[NO_MAP, "has_detection"]
    with pytest.raises(FileNotFoundError, match=NO_MAP):
        analyse(outputs, NO_MAP)


@pytest.mark.parametrize("value", [0.0101, 0.03, 0.049])
def test_typed_value_becomes_a_percentile_that_separates_pixels_the_same_way(value):
    values = np.random.default_rng(1).uniform(0, 0.05, 5000)
    p = data.percentile_for_value(values, value)
    reproduced = np.percentile(values, p)
    assert ((values > reproduced) == (values > value)).all()
    assert data.percentile_for_value(values, 1.0) == 100.0


def test_check_outputs_names_the_stage_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text(PARAMS)
    messages = [p.message for p in data.check_outputs(paths_of(tmp_path))]
    assert any("dvc repro png" in m for m in messages)
    assert any("dvc repro detect" in m for m in messages)
    assert any("dvc repro evaluate" in m for m in messages)


def test_compose_slice_draws_outlines_and_overlay():
    ct = np.full((8, 8), 100, np.uint8)
    anomaly = np.zeros((8, 8), np.float32)
    anomaly[2:5, 2:5] = 0.5
    det = (anomaly > 0).astype(np.int32)
    truth = np.zeros((8, 8), bool)
    truth[5:8, 5:8] = True
    rgb = view.compose_slice(ct, anomaly, det, truth, opacity=1.0, vmax=0.5, scale=4)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[8, 10]) == (0, 255, 255)  # detection outline (cyan)
    assert tuple(rgb[19, 24]) == (255, 40, 40)  # truth outline (red), just outside it
    assert tuple(rgb[0, 0]) == (100, 100, 100)  # plain CT where nothing is
    matched = view.compose_slice(ct, anomaly, truth, truth, opacity=1.0, vmax=0.5, scale=4)
    assert tuple(matched[20, 24]) == (0, 255, 255) and tuple(matched[19, 24]) == (255, 40, 40)
    plain = view.compose_slice(ct, anomaly, det * 0, None, opacity=0.0, vmax=0.5, scale=1)
    assert (plain == 100).all()


def test_save_evaluate_params_changes_only_evaluate_keys(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    before = read_params(path)
    changed = save_evaluate_params(path, {"min_component_px": 9, "consistency_3d": True})
    after = read_params(path)
    assert changed == {"min_component_px": (4, 9), "consistency_3d": (False, True)}
    assert {k: v for k, v in after.items() if k != "evaluate"} == {
        k: v for k, v in before.items() if k != "evaluate"
    }
    assert after["evaluate"] == before["evaluate"] | {"min_component_px": 9, "consistency_3d": True}
    text = path.read_text()
    assert "# top comment: kept by the app" in text and "# adjacent-slice check" in text


# ---------------------------------------------------------------- the page


def page(root: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--root", str(root)])
    at = AppTest.from_file(str(SCRIPT), default_timeout=60)
    return at.run()


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_page_renders_switches_series_and_reacts_to_controls(outputs, monkeypatch):
    at = page(outputs, monkeypatch)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.sidebar.selectbox(key="series").value == BLEED
    assert metric(at, "Bleed slices flagged") == "2 / 2"
    assert len(at.image) == 2  # slice picture and score strip

    at.sidebar.selectbox(key="series").select(HEALTHY).run()
    assert metric(at, "FP components on healthy slices") == "1"
    at.sidebar.number_input(key="min_component_px").set_value(16).run()
    assert metric(at, "FP components on healthy slices") == "0"
    assert metric(at, "Slices flagged") == "0 / 4"
    assert any("No detections on this series" in i.value for i in at.info)

    at.sidebar.radio(key="split").set_value("val").run()
    assert not at.exception and at.sidebar.selectbox(key="series").value == VAL
    assert metric(at, "FP components on healthy slices") == "0"
    at.sidebar.radio(key="split").set_value("test").run()
    at.sidebar.selectbox(key="series").select(NO_MAP).run()
    assert any("no anomaly map" in w.value and "dvc repro detect" in w.value for w in at.warning)


def test_fpr_mode_and_3d_consistency_render_and_decide_by_slice_score(outputs, monkeypatch):
    at = page(outputs, monkeypatch)
    at.sidebar.radio(key="threshold_mode").set_value("fpr").run()
    at.sidebar.number_input(key="target_fpr").set_value(0.5).run()
    at.sidebar.toggle(key="consistency_3d").set_value(True).run()
    assert not at.exception, at.exception
    assert "slice threshold on `score_top1pct`" in at.markdown[0].value
    # The bleed spans slices 1 and 2, so the 3-D check keeps both detections.
    assert metric(at, "Detections (components)") == "2"
    assert metric(at, "Bleed slices flagged") == "2 / 2"


def test_save_as_params_writes_what_is_on_screen(outputs, monkeypatch):
    at = page(outputs, monkeypatch)
    at.sidebar.radio(key="threshold_mode").set_value("value").run()
    at.sidebar.number_input(key="pixel_value").set_value(0.03).run()
    at.sidebar.number_input(key="erosion_px").set_value(1).run()
    at.sidebar.button(key="save").click().run()
    assert not at.exception, at.exception
    saved = read_params(outputs / "params.yaml")["evaluate"]
    assert saved["threshold_mode"] == "percentile" and saved["erosion_px"] == 1
    assert saved["n_splits"] == 2  # not an app key: untouched
    assert read_params(outputs / "params.yaml")["png"] == {"canvas": 32, "img_size": 32}
    # The saved percentile reproduces the typed threshold on healthy validation.
    paths = paths_of(outputs)
    choice = page_choice(erosion_px=1)
    validation = data.pool_validation(data.load_manifest(paths), paths, choice.settings)
    reproduced = np.percentile(validation.pixel_values, saved["percentile"])
    assert ((validation.pixel_values > reproduced) == (validation.pixel_values > 0.03)).all()
    assert any("Saved to params.yaml" in s.value for s in at.sidebar.success)


def test_outputs_of_mixed_runs_give_a_message_not_a_traceback(outputs, monkeypatch):
    params = outputs / "params.yaml"
    params.write_text(params.read_text().replace("img_size: 32", "img_size: 64"))
    at = page(outputs, monkeypatch)
    assert not at.exception, at.exception
    assert any("dvc repro detect" in e.value and "expected" in e.value for e in at.error)


def dvc_options(group: dict) -> list[str]:
    """A params group as DVC unpacks it into a command line (booleans as --key/--no-key)."""
    options = []
    for key, value in group.items():
        if isinstance(value, bool):
            options.append(f"--{key}" if value else f"--no-{key}")
        else:
            options += [f"--{key}", str(value)]
    return options


def test_evaluate_with_saved_params_reproduces_the_page(outputs, monkeypatch):
    """What `dvc exp run` would run after "Save as params" gives the numbers on screen."""
    manifest = outputs / "data/processed/slices.csv"
    frame = pd.read_csv(manifest)
    frame[frame["series_uid"] != NO_MAP].to_csv(manifest, index=False)  # evaluate needs every map
    at = page(outputs, monkeypatch)
    at.sidebar.selectbox(key="series").select(HEALTHY).run()
    at.sidebar.radio(key="threshold_mode").set_value("value").run()
    at.sidebar.number_input(key="pixel_value").set_value(0.045).run()
    at.sidebar.number_input(key="erosion_px").set_value(1).run()
    at.sidebar.button(key="save").click().run()
    on_screen = int(metric(at, "FP components on healthy slices"))
    in_force = float(at.markdown[0].value.split("**")[1])

    from ichinpaint import cli

    monkeypatch.chdir(outputs)
    evaluate = read_params(outputs / "params.yaml")["evaluate"]
    options = ["--canvas", "32", "--img_size", "32", "--ground_truth", "data/raw/ground_truth"]
    assert cli.main(["evaluate", *dvc_options(evaluate), *options, "--n_jobs", "1"]) == 0
    result = json.loads((outputs / "metrics/reports/detection.json").read_text())
    assert result["pixel_threshold"] == pytest.approx(in_force, abs=5e-5)  # shown to 4 decimals
    assert result["fp_components_per_healthy_series"] == on_screen == 1  # the one healthy series


@pytest.mark.parametrize(
    ("remove", "expected"),
    [("data/detections", "dvc repro detect"), ("data/processed/slices.csv", "dvc repro png")],
)
def test_missing_outputs_show_what_to_run(outputs, monkeypatch, remove, expected):
    target = outputs / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    at = page(outputs, monkeypatch)
    assert not at.exception, at.exception
    assert any(expected in e.value for e in at.error)
