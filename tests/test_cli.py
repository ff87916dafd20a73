"""The `ichinpaint` command's shared options: --headline writes a stage's metrics headline."""

import importlib
import json

import pytest

from ichinpaint import cli, io


def test_headline_is_the_named_values_of_the_report(tmp_path):
    report = tmp_path / "report.json"
    io.write_json(report, {"kept": 7, "excluded": 1, "dice_mean": 0.9, "per": {"a": 1}})
    written = io.write_headline(
        report, tmp_path / "h.json", {"images": "kept", "dice": "dice_mean", "x": "absent"}
    )
    assert written == {"images": 7, "dice": 0.9}  # absent keys are left out, not null
    assert json.loads((tmp_path / "h.json").read_text()) == written


@pytest.mark.parametrize("name", [n for n in cli.COMMANDS if n != "app"])
def test_every_pipeline_stage_offers_a_headline_of_its_metrics(name):
    module = importlib.import_module(f"ichinpaint.stages.{name.replace('-', '_')}")
    if name in ("synthesize", "synthesize-test", "export-onnx"):
        assert not hasattr(module, "HEADLINE")  # writes data or a model, no metrics
        return
    # few values, so that `dvc metrics show` stays narrow
    assert 1 <= len(module.HEADLINE) <= 4
    positional = ["some/folder"] if name == "predict" else []  # predict's DICOM folder
    options = cli.build_parser([name]).parse_args([name, *positional, "--headline", "h.json"])
    assert options.headline == "h.json" and str(options.metrics).startswith("metrics/reports/")


def test_filter_writes_report_and_headline(tmp_path):
    from ichinpaint.synthetic import write_dataset

    raw = tmp_path / "raw"
    write_dataset(raw, n_patients=8, n_slices=4, matrix=64, seed=0, sheet=False)
    argv = ["filter", "--raw_dir", str(raw), "--out", str(tmp_path / "slices.csv")]
    argv += ["--metrics", str(tmp_path / "report.json"), "--headline", str(tmp_path / "f.json")]
    assert cli.main([*argv, "--n_jobs", "1"]) == 0
    report = io.read_json(tmp_path / "report.json")
    headline = io.read_json(tmp_path / "f.json")
    assert headline == {"images": report["kept"], "excluded": report["excluded"]}
    assert len(report) > 10  # the bookkeeping stays in the report
