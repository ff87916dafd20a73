"""Every stage setting has a declared range, and a value outside it stops the stage first.

Also the CLI's error contract: one line naming the problem and a non-zero exit, the
traceback only with --debug or ICHINPAINT_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from ichinpaint import cli, params

# One or more values outside the range of every ruled option, per stage.
BAD = {
    "synthesize": {
        "n_patients": [0, 2],
        "n_slices": [1],
        "min_slices": [0],
        "matrix": [0, 16],
        "hemorrhage_fraction": [-0.1, 1.5],
        "seed": [-1],
        "n_jobs": [0, -2],
    },
    "filter": {
        "val_fraction": [0, 1, -0.5],
        "test_healthy_fraction": [0, 1.2],
        "fraction": [0, 1.01],
        "seed": [-3],
        "n_jobs": [0],
    },
    "nifti": {"spacing_tolerance": [-1, 0], "n_jobs": [0]},
    "mask": {"model_size": [0], "n_jobs": [0]},
    "png": {
        "canvas": [0],
        "img_size": [0, 4],
        "midrange_min_fraction": [2, 1, -0.1],
        "n_jobs": [0],
    },
    "train": {
        "img_size": [0],
        "total_image_seen": [0, -5],
        "batch_size": [0],
        "accumulate_grad_batches": [0],
        "num_devices": [0],
        "num_nodes": [0],
        "precision": ["33"],
        "lr": [0, -1e-3],
        "ema_decay": [1, -0.1],
        "model_channels": [0, 48],
        "channel_mult": [[0], []],
        "attention_resolutions": [[0]],
        "num_res_blocks": [0],
        "sizes": [[0], []],
        "grid_fraction": [1.5],
        "known_weight": [-0.1, 1.5],
        "noise_cell": [0],
        "val_every": [0],
        "val_images": [0],
        "checkpoint_every": [0],
        "seed": [-1],
        "num_workers": [-1],
    },
    "detect": {
        "canvas": [0],
        "sizes": [[0], []],
        "ddim_steps": [0],
        "start_fraction": [0, 1.5],
        "jump_length": [0],
        "jump_n_sample": [0],
        "noise_levels": [[0], [1.2], []],
        "batch_size": [0],
        "seed": [-1],
        "splits": [["train", "foo"], []],
        "n_overlays": [-1],
        "work": [[" "]],
        "num_parts": [0],
        "part_id": [-1],
        "dist_timeout_h": [0],
        "gate_hu": [[-5000, 100], [35, 9000]],
        "baseline_hu": [[55, 1e9]],
    },
    "evaluate": {
        "percentile": [0, 101],
        "target_fpr": [-0.1, 1],
        "erosion_px": [-1],
        "median_size": [-1],
        "min_component_px": [-1],
        "n_splits": [1, 0],
        "gallery_per_category": [-1],
        "rim_px": [-1],
        "n_jobs": [0],
        "canvas": [0],
        "img_size": [0],
    },
    "app": {"port": [0, 70000], "n_jobs": [0]},
}
CROSS = [
    ("filter", ["--val_fraction", "0.5", "--test_healthy_fraction", "0.5"], "sum < 1"),
    ("train", ["--img_size", "66", "--channel_mult", "1", "2", "2"], "divisible by 4"),
    ("mask", ["--method", "model", "--model_path", ""], "--model_path"),
    ("detect", ["--gate_hu", "100", "35"], "LOW must be below HIGH"),
]


def stage_parser(name: str) -> argparse.ArgumentParser:
    return cli.subparser(cli.build_parser([name]), name)


def as_argv(option: str, value) -> list[str]:
    if isinstance(value, list):
        return [f"--{option}", *map(str, value)]
    return [f"--{option}", str(value)]


@pytest.mark.parametrize("stage", sorted(BAD))
def test_every_numeric_or_list_option_has_a_rule_and_a_bad_value(stage):
    module = cli._load(stage)
    rules = getattr(module, "PARAM_RULES", {})
    ruled = set()
    for action in stage_parser(stage)._actions:
        numeric = action.type in (int, float)
        listed = action.nargs in ("+", "*")
        if (numeric or listed) and not action.choices:
            ruled.add(action.dest)
    assert ruled <= set(rules), f"options without a range: {sorted(ruled - set(rules))}"
    assert set(rules) == set(BAD[stage]), "every rule needs a bad value in this test"


# Stages with a params.yaml group and the group's name.
GROUPS = {
    "synthesize": "synthesize",
    "synthesize-test": "synthesize_test",
    "filter": "filter",
    "nifti": "nifti",
    "mask": "mask",
    "png": "png",
    "train": "train",
    "detect": "detect",
    "evaluate": "evaluate",
    "predict": "predict",
}


def _agrees(value, kind) -> bool:
    """A params.yaml value fits a field type (ints are fine where floats are declared)."""
    if typing.get_origin(kind) is tuple:
        elements = typing.get_args(kind)
        element = elements[0]
        fixed = not (len(elements) == 2 and elements[1] is Ellipsis)
        return (
            isinstance(value, list)
            and (not fixed or len(value) == len(elements))
            and all(_agrees(v, element) for v in value)
        )
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


@pytest.mark.parametrize("stage", sorted(GROUPS))
def test_each_stage_declares_its_params_group_once(stage):
    """Each params key is a field of the stage's settings dataclass and each field with a
    params key is in params.yaml, with the same type and default; the command line
    gives exactly those defaults."""
    groups = yaml.safe_load(Path("params.yaml").read_text())
    group = GROUPS[stage]
    settings = cli._load(stage).SETTINGS
    declared = {
        params.param_key(f, group): (f, kind) for f, kind in params.declared_fields(settings)
    }
    declared.pop("", None)  # command-line-only settings
    in_yaml = {f"{group}.{key}" for key in groups[group]}
    assert in_yaml <= set(declared), f"params without a field: {sorted(in_yaml - set(declared))}"
    for key, (field, kind) in declared.items():
        owner, name = key.split(".", 1)
        assert name in groups[owner], f"{settings.__name__}.{field.name}: no {key} in params.yaml"
        value = groups[owner][name]
        assert _agrees(value, kind), f"{key}: {value!r} is not a {kind}"
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        assert default == value, f"{settings.__name__}.{field.name} = {default!r}, {key}: {value!r}"
    argv = [stage, "in"] if stage == "predict" else [stage]
    args = cli.build_parser([stage]).parse_args(argv)
    assert params.from_args(settings, args) == settings()


def test_params_yaml_lies_inside_the_ranges():
    with open("params.yaml") as fh:
        groups = yaml.safe_load(fh)
    for stage in BAD:
        module = cli._load(stage)
        values = groups.get(stage, {})
        args = argparse.Namespace(**values)
        params.validate(args, module.PARAM_RULES)


CASES = [(s, o, v) for s in sorted(BAD) for o, values in BAD[s].items() for v in values]


@pytest.mark.parametrize("stage, option, value", CASES, ids=[f"{s}-{o}-{v}" for s, o, v in CASES])
def test_a_bad_value_stops_the_stage_before_any_work(stage, option, value, tmp_path, capsys):
    out = tmp_path / "never"
    argv = [stage, *as_argv(option, value), "--out", str(out)]
    if stage in ("evaluate", "app"):
        argv = argv[:-2] + ["--metrics", str(out)]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--{option}" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("stage, extra, text", CROSS)
def test_rules_that_join_options(stage, extra, text, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([stage, *extra, "--out", str(tmp_path / "never")])
    assert info.value.code == 2
    assert text in capsys.readouterr().err


def test_an_empty_list_under_dvc_is_not_the_default(monkeypatch, tmp_path, capsys):
    # `dvc exp run -S detect.splits=[]`: DVC leaves the option out of the command.
    monkeypatch.setenv("DVC_STAGE", "detect")
    argv = ["detect", "--sizes", "8", "--noise_levels", "0.5", "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "--splits: empty list" in capsys.readouterr().err
    # train's attention_resolutions may be empty: no attention, not the default [8].
    sub = stage_parser("train")
    args = sub.parse_args(["--channel_mult", "1", "2", "--sizes", "8"])
    cli.empty_lists_from_dvc(sub, ["--channel_mult", "1", "2", "--sizes", "8"], args)
    assert args.attention_resolutions == [] and args.channel_mult == [1, 2]


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ichinpaint.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_a_failing_stage_prints_one_line_and_the_traceback_only_on_request(tmp_path):
    argv = ["filter", "--raw_dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s.csv")]
    quiet = run_cli(*argv, env={"ICHINPAINT_DEBUG": ""})
    assert quiet.returncode == 1
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and "stage_2_train.csv" in lines[0], quiet.stderr
    assert "Traceback" not in quiet.stderr
    for loud in (run_cli(*argv, "--debug"), run_cli(*argv, env={"ICHINPAINT_DEBUG": "1"})):
        assert loud.returncode == 1 and "Traceback" in loud.stderr
