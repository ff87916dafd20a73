"""benchmarks/healthy_twin.py: the ceiling map and the params it passes on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import healthy_twin as ht  # noqa: E402

from ichinpaint.windowing import brain_window  # noqa: E402


def test_params_groups_render_as_dvc_renders_them():
    group = {"consistency_3d": True, "mirror": False, "sizes": [8, 32], "percentile": 99.5}
    assert ht.stage_args(group) == [
        "--consistency_3d", "--no-mirror", "--sizes", "8", "32", "--percentile", "99.5",
    ]  # fmt: skip


def test_the_twin_map_is_the_brighter_part_in_window_units_gated_inside_the_brain():
    twin_hu = np.full((8, 8), 30.0)
    real_hu = twin_hu.copy()
    real_hu[2:4, 2:4] += 40.0  # a bleed: 40 HU brighter = half the 80 HU window
    real_hu[6, 6] -= 20.0  # darker than the twin: never flagged
    brain = np.ones((8, 8), bool)
    brain[:, 7] = False
    gate = np.ones((8, 8))
    gate[3, 3] = 0.25
    out = ht.twin_map(brain_window(real_hu), brain_window(twin_hu), brain, gate)
    assert np.allclose(out[2, 2], 0.5, atol=0.01) and np.allclose(out[3, 3], 0.125, atol=0.01)
    out[2:4, 2:4] = 0
    assert not out.any()
    same = ht.twin_map(brain_window(twin_hu), brain_window(twin_hu), brain, gate)
    assert not same.any()


def test_each_dataset_gets_its_own_work_folder():
    params = {g: {"seed": 0} for g in ht.DATA_GROUPS}
    same = {g: dict(v) for g, v in params.items()}
    other = {**params, "synthesize": {"seed": 1}}
    root = Path("/tmp/x")
    assert ht.work_folder(root, params) == ht.work_folder(root, same)
    assert ht.work_folder(root, params) != ht.work_folder(root, other)
    assert ht.work_folder(root, params).parent == root
