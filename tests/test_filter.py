"""The filter stage on a real RSNA-layout fixture directory with every quirk."""

from __future__ import annotations

import dicom_fixtures as fx
import pandas as pd
import pytest

from ichinpaint import cli
from ichinpaint.constants import LABELS
from ichinpaint.preprocess import filter as slice_filter


@pytest.fixture(scope="module")
def quirky(tmp_path_factory) -> fx.QuirkyDataset:
    return fx.write_quirky_dataset(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def stage_output(quirky, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cli.main(
        ["filter", "--raw_dir", str(quirky.root), "--out", str(out / "slices.csv"),
         "--metrics", str(out / "filter.json"), "--n_jobs", "2"]
    )  # fmt: skip
    table = pd.read_csv(out / "slices.csv")
    table[["split", "reason"]] = table[["split", "reason"]].fillna("")
    return table, pd.read_json(out / "filter.json", typ="series")


def test_every_image_has_one_row_and_the_right_reason(quirky, stage_output):
    table, metrics = stage_output
    assert list(table.columns) == slice_filter.COLUMNS
    assert table["image_id"].is_unique
    ids = {s.image_id for s in quirky.specs} | set(quirky.expected_reason)
    assert set(table["image_id"]) == ids
    excluded = table.loc[table["status"] == "excluded"].set_index("image_id")["reason"].to_dict()
    assert excluded == quirky.expected_reason
    assert (table.loc[table["status"] == "kept", "reason"] == "").all()


def test_metrics_reconcile(quirky, stage_output):
    table, metrics = stage_output
    assert metrics["images_total"] == len(table) == metrics["kept"] + metrics["excluded"]
    assert metrics["excluded"] == 4
    for reason in quirky.expected_reason.values():
        assert metrics[f"excluded_{reason}"] == 1
    assert metrics["csv_duplicate_rows_dropped"] == quirky.duplicated_rows
    assert metrics["files_on_disk"] == len(quirky.specs) + 1
    assert metrics["hemorrhage_images"] == 4 and metrics["hemorrhage_patients"] == 2
    assert sum(metrics[f"{s}_images"] for s in ("train", "val", "test")) == metrics["kept"]


def test_split_is_by_patient_and_hemorrhage_is_test_only(stage_output):
    table, _ = stage_output
    kept = table.loc[table["status"] == "kept"]
    assert (kept.groupby("patient_id")["split"].nunique() == 1).all()
    sick = kept.loc[kept["any"] == 1, "patient_id"].unique()
    assert set(kept.loc[kept["patient_id"].isin(sick), "split"]) == {"test"}
    assert (kept.loc[kept["split"] != "test", list(LABELS)] == 0).all().all()
    assert set(kept["split"]) == {"train", "val", "test"}


def test_positions_and_labels_come_from_headers_and_csv(quirky, stage_output):
    table, _ = stage_output
    rows = table.set_index("image_id")
    for spec in quirky.specs:
        if (
            spec.image_id in quirky.expected_reason
            and quirky.expected_reason[spec.image_id] != "no_label_row"
        ):
            continue
        row = rows.loc[spec.image_id]
        assert row["series_uid"] == spec.series_uid and row["patient_id"] == spec.patient_id
        normal_position = spec.ipp[2] if spec.iop[5] == 0 else None
        if normal_position is not None:
            assert row["position"] == pytest.approx(normal_position)
        if row["reason"] != "no_label_row":
            assert [row[name] for name in LABELS] == [spec.labels[name] for name in LABELS]


def test_fraction_subsamples_whole_training_series(quirky):
    table, metrics = slice_filter.build_slice_table(
        quirky.root, val_fraction=0.15, test_healthy_fraction=0.15, fraction=0.4, seed=0, n_jobs=1
    )
    train = table.loc[table["split"] == "train"]
    dropped = train["reason"] == "fraction_subsampled"
    assert dropped.any() and (train["status"] == "kept").any()
    # a series is either kept whole or dropped whole
    per_series = (
        train.loc[train["reason"].isin(["", "fraction_subsampled"])]
        .groupby("series_uid")["reason"]
        .nunique()
    )
    assert (per_series == 1).all()
    assert metrics["excluded_fraction_subsampled"] == int(dropped.sum())
    assert (table.loc[table["split"] != "train", "reason"] != "fraction_subsampled").all()


def test_conflicting_csv_rows_stop_the_stage(tmp_path):
    specs = fx.series_specs(number=1, n_slices=2)
    fx.write_rsna_dir(tmp_path, specs, extra_rows=[(f"{specs[0].image_id}_any", 1)])
    with pytest.raises(ValueError, match=f"{specs[0].image_id}_any"):
        slice_filter.build_slice_table(
            tmp_path, val_fraction=0.1, test_healthy_fraction=0.1, fraction=1, seed=0, n_jobs=1
        )
