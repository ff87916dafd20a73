"""The RSNA label CSV: validation, de-duplication, pivot and the `any` check."""

from __future__ import annotations

import dicom_fixtures as fx
import pytest

from ichinpaint import labels
from ichinpaint.constants import LABELS


def rows_for(image_id: str, positive: tuple[str, ...] = ()) -> list[tuple[str, int]]:
    return [(f"{image_id}_{name}", int(name in positive)) for name in LABELS]


def test_pivot_one_row_per_image_in_label_order(tmp_path):
    path = fx.write_label_csv(
        tmp_path / "l.csv",
        rows_for("ID_0a1") + rows_for("ID_0b2", ("subdural", "any")),
    )
    table = labels.read_labels(path)
    assert list(table.frame.columns) == list(LABELS)
    assert table.frame.loc["ID_0b2"].tolist() == [0, 0, 0, 0, 1, 1]
    assert table.frame.loc["ID_0a1"].sum() == 0
    assert (table.rows_read, table.duplicate_rows, table.any_mismatch) == (12, 0, [])


def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path):
    twice = rows_for("ID_0c3", ("epidural", "any"))
    path = fx.write_label_csv(tmp_path / "l.csv", rows_for("ID_0a1") + twice + twice)
    table = labels.read_labels(path)
    assert table.duplicate_rows == 6
    assert len(table.frame) == 2
    assert table.frame.loc["ID_0c3", "epidural"] == 1


def test_conflicting_rows_name_the_csv_and_the_ids(tmp_path):
    rows = rows_for("ID_0a1") + [("ID_0a1_subdural", 1)] + rows_for("ID_0b2")
    path = fx.write_label_csv(tmp_path / "l.csv", rows)
    with pytest.raises(labels.LabelError, match="ID_0a1_subdural") as info:
        labels.read_labels(path)
    assert str(path) in str(info.value)
    assert "ID_0b2" not in str(info.value)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (("ID_0a1_subdurall", "0"), "malformed ID"),
        (("0a1_subdural", "0"), "malformed ID"),
        (("ID_xyz_any", "0"), "malformed ID"),
        (("ID_0a2_any", "2"), "not 0 or 1"),
        (("ID_0a2_any", ""), "not 0 or 1"),
    ],
)
def test_malformed_rows_are_refused_with_their_line(tmp_path, bad_row, message):
    path = fx.write_label_csv(tmp_path / "l.csv", rows_for("ID_0a1") + [bad_row])
    with pytest.raises(labels.LabelError, match=message) as info:
        labels.read_labels(path)
    assert str(path) in str(info.value) and "line 8" in str(info.value)


def test_wrong_header_and_incomplete_images(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("Id,Value\nID_0a1_any,0\n")
    with pytest.raises(labels.LabelError, match="header"):
        labels.read_labels(path)
    path = fx.write_label_csv(tmp_path / "i.csv", rows_for("ID_0a1")[:5])
    with pytest.raises(labels.LabelError, match=r"lack some.*ID_0a1.*any"):
        labels.read_labels(path)


def test_any_that_disagrees_with_the_subtypes_is_reported(tmp_path):
    path = fx.write_label_csv(
        tmp_path / "l.csv",
        rows_for("ID_0a1", ("subdural",)) + rows_for("ID_0b2", ("any",)) + rows_for("ID_0c3"),
    )
    assert sorted(labels.read_labels(path).any_mismatch) == ["ID_0a1", "ID_0b2"]
