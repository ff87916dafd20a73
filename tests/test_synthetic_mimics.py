"""Synthetic data v2: healthy mimics, skull base to vertex, varied series length, splits.

One healthy series with every optional mimic and one with bleeds are rendered once
per module at 96 px (a few seconds); dataset-level checks write a small set.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from ichinpaint import splits
from ichinpaint.constants import MIMIC_CODES, MIMIC_KINDS, SUBTYPES
from ichinpaint.stages import filter as filter_stage
from ichinpaint.stages import synthesize
from ichinpaint.synthetic import anatomy, mimics, render, write_dataset
from ichinpaint.synthetic.plan import plan_dataset

PARAMS = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())


@pytest.fixture(autouse=True)
def _quiet_uid_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def healthy() -> render.RenderedSeries:
    return render.render_series(
        anatomy.load_template(),
        np.random.default_rng(11),
        28,
        96,
        96,
        [],
        mimic_kinds=list(mimics.OPTIONAL_MIMICS),
    )


@pytest.fixture(scope="module")
def bleeding() -> render.RenderedSeries:
    return render.render_series(
        anatomy.load_template(),
        np.random.default_rng(12),
        26,
        96,
        96,
        list(SUBTYPES),
        mimic_kinds=list(mimics.OPTIONAL_MIMICS),
    )


def _median_hu(series: render.RenderedSeries, kind: str) -> float:
    return float(np.median(series.hu[series.mimic == MIMIC_CODES[kind]]))


def test_every_mimic_kind_appears_in_a_healthy_series(healthy):
    present = {MIMIC_KINDS[c - 1] for c in np.unique(healthy.mimic) if c}
    assert present == set(MIMIC_KINDS)
    assert not healthy.lesion.any()


def test_each_mimic_has_its_intended_hu(healthy):
    brain = float(np.median(healthy.hu[(healthy.brain > 0) & (healthy.mimic == 0)]))
    assert 25 < brain < 40
    for kind in ("choroid_plexus", "pineal", "basal_ganglia"):  # calcification, a few mm
        values = healthy.hu[healthy.mimic == MIMIC_CODES[kind]]
        # Small: at 2.5 mm pixels partial volume and the kernel's blur dilute the edge.
        assert np.median(values) >= brain + 15 and values.max() >= 100, kind
    for kind in ("falx", "tentorium"):  # dense dura, partial volume with brain
        assert brain + 5 < _median_hu(healthy, kind) < 100, kind
    # Unclotted blood (hematocrit-dependent): in the range of acute bleeds, the trap.
    assert 40 <= _median_hu(healthy, "venous_sinus") <= 75
    assert _median_hu(healthy, "skull_base") >= 150  # bone partial volume
    assert _median_hu(healthy, "beam_hardening") <= brain - 3  # the interpetrous dark band
    for kind in ("old_infarct", "arachnoid_cyst"):  # hypodense
        assert _median_hu(healthy, kind) <= brain - 6, kind


def test_mimic_voxels_never_carry_a_lesion_label(bleeding):
    assert bleeding.lesion.any() and bleeding.mimic.any()
    assert not ((bleeding.mimic > 0) & (bleeding.lesion > 0)).any()


def test_stack_reaches_from_the_skull_base_to_the_vertex(healthy):
    brain_area = healthy.brain.sum((1, 2))
    widest = brain_area.max()
    # Lowest slices: posterior fossa and skull base (little brain, petrous and orbit bone);
    # top slices: the vertex, a small cap of brain inside thick oblique skull.
    assert brain_area[0] < 0.5 * widest and brain_area[-1] < 0.35 * widest
    low = healthy.mimic[:8]
    assert (low == MIMIC_CODES["skull_base"]).any()
    assert (healthy.hu[:6] < -500).mean() > (healthy.hu[14] < -500).mean()  # sinus air
    top = healthy.hu[-1][healthy.brain[-1] == 0]
    assert (top > 300).sum() > 0.5 * healthy.brain[-1].sum()  # bone rims the small cap


def test_series_lengths_vary_within_the_range_and_stay_fixed_without_it():
    varied = plan_dataset(40, 32, 256, 0.35, seed=0, min_slices=20)
    lengths = [s.n_slices for s in varied.series]
    assert min(lengths) >= 20 and max(lengths) <= 32 and len(set(lengths)) > 5
    fixed = plan_dataset(6, 5, 64, 0.5, seed=0)
    assert {s.n_slices for s in fixed.series} == {5}
    # A minimum above the maximum (a short set with the stage defaults) is the maximum.
    assert {s.n_slices for s in plan_dataset(3, 4, 64, 0.5, seed=0, min_slices=20).series} == {4}


def test_rare_mimics_have_healthy_carriers():
    plan = plan_dataset(40, 32, 256, 0.35, seed=0, min_slices=20)
    for kind in mimics.OPTIONAL_MIMICS:
        carriers = [s for s in plan.series if kind in s.mimic_kinds and not s.lesion_kinds]
        assert len(carriers) >= 2, kind


def _defaults(module) -> dict:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return vars(parser.parse_args([]))


@pytest.mark.parametrize("seed", [0, 1])
def test_default_split_has_eight_healthy_series_in_val_and_in_test(seed):
    synth, filt = _defaults(synthesize), _defaults(filter_stage)
    assert {k: synth[k] for k in PARAMS["synthesize"]} == PARAMS["synthesize"]
    assert filt["val_fraction"] == PARAMS["filter"]["val_fraction"]
    assert filt["test_healthy_fraction"] == PARAMS["filter"]["test_healthy_fraction"]
    plan = plan_dataset(
        synth["n_patients"],
        synth["n_slices"],
        synth["matrix"],
        synth["hemorrhage_fraction"],
        seed=seed,
        min_slices=synth["min_slices"],
    )
    bleeds = {s.patient_id: bool(s.lesion_kinds) for s in plan.series}
    split = splits.split_patients(
        bleeds,
        val_fraction=filt["val_fraction"],
        test_healthy_fraction=filt["test_healthy_fraction"],
        seed=filt["seed"],
    )
    healthy_in = {
        name: sum(1 for p, s in split.items() if s == name and not bleeds[p])
        for name in splits.SPLITS
    }
    assert healthy_in["val"] >= 8 and healthy_in["test"] >= 8 and healthy_in["train"] >= 8
    assert 12 <= sum(bleeds.values()) <= 16
    assert all(split[p] == "test" for p, b in bleeds.items() if b)
    per_subtype = {k: sum(k in s.lesion_kinds for s in plan.series) for k in SUBTYPES}
    assert min(per_subtype.values()) >= 3, per_subtype


def test_mimic_volume_is_written_on_the_lesion_grid_without_overlap(tmp_path):
    out = tmp_path / "raw"
    write_dataset(out, n_patients=3, n_slices=8, matrix=64, hemorrhage_fraction=0.34, seed=2)
    folders = sorted((out / "ground_truth").glob("ID_*"))
    assert len(folders) == 3
    seen = set()
    for folder in folders:
        lesion, mimic = nib.load(folder / "lesion.nii.gz"), nib.load(folder / "mimic.nii.gz")
        assert mimic.shape == lesion.shape and mimic.get_data_dtype() == np.uint8
        np.testing.assert_allclose(mimic.affine, lesion.affine)
        codes, lesion_codes = np.asarray(mimic.dataobj), np.asarray(lesion.dataobj)
        assert set(np.unique(codes)) <= set(range(len(MIMIC_KINDS) + 1))
        assert not ((codes > 0) & (lesion_codes > 0)).any()
        seen |= {MIMIC_KINDS[c - 1] for c in np.unique(codes) if c}
    assert {"falx", "venous_sinus"} <= seen
    table = (out / "ground_truth" / "series.csv").read_text()
    assert "mimics" in table.splitlines()[0]


def test_varied_lengths_are_byte_identical_for_any_number_of_workers(tmp_path):
    small = dict(n_patients=2, n_slices=6, min_slices=3, matrix=48, seed=4, sheet=False)
    write_dataset(tmp_path / "a", **small, n_jobs=1)
    write_dataset(tmp_path / "b", **small, n_jobs=2)

    def tree(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    table = (tmp_path / "a" / "ground_truth" / "series.csv").read_text().splitlines()
    n_files = [int(row.split(",")[6]) for row in table[1:]]
    assert all(3 <= n <= 6 for n in n_files)
