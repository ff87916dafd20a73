"""Decide, before anything is drawn, what each synthetic series will be.

Identifiers, which patients bleed and with which subtypes, pixel encodings and the
RSNA quirks are all fixed here from the seed, so the output depends on the seed only
(never on the number of worker processes) and each quirk is known up front.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ichinpaint.constants import SUBTYPES

from .mimics import OPTIONAL_MIMICS, prevalence

# The quirks of the real RSNA data that the synthetic set reproduces (docs/synthetic-data.md).
QUIRKS: dict[str, str] = {
    "multivalue_window": "WindowCenter/WindowWidth are MultiValue (two equal values): read the first",
    "rsna12_encoding": "BitsStored 12, PixelRepresentation 0, RescaleIntercept 1: HU need "
    "x = stored + 1000; x[x >= 4096] -= 4096; HU = x * slope - 1000",
    "non_default_matrix": "Rows x Columns differ from the default matrix (non-square)",
    "gantry_tilt": "ImageOrientationPatient tilted about x; IPP steps along z; keep the tilt in the affine",
    "truncated_pixel_data": "PixelData cut short: exclude the image (corrupt_pixel_data), keep its CSV rows",
    "duplicate_csv_rows": "the image's six CSV rows appear twice, identical: count it once",
}
SERIES_QUIRKS = ("multivalue_window", "rsna12_encoding", "non_default_matrix", "gantry_tilt")
# A series has to be this long before its top slice can be the truncated file (the
# rest must still stack).
MIN_SLICES_FOR_TRUNCATION = 3


@dataclass
class SeriesPlan:
    """Everything about one patient's single series that is decided before rendering."""

    patient_id: str
    study_uid: str
    series_uid: str
    image_ids: list[str]  # in slice order k (ascending along the normal)
    seed: np.random.SeedSequence
    rows: int
    cols: int
    lesion_kinds: list[str]
    mimic_kinds: list[str] = field(default_factory=list)  # optional mimics (mimics.OPTIONAL_MIMICS)
    age: float = 60.0
    encoding: str = "signed16"
    fov_padding: bool = False
    window: tuple[float, float] = (40.0, 80.0)
    tilt_deg: float = 0.0
    multivalue_window: bool = False
    truncated_k: int | None = None
    quirks: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.image_ids)


@dataclass
class DatasetPlan:
    series: list[SeriesPlan]
    duplicated_ids: list[str]  # images whose CSV rows are written twice


class _HexIds:
    """Unique random RSNA-style identifiers (``ID_<hex>``) of a given length."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def new(self, digits: int) -> str:
        while True:
            value = f"ID_{int(self.rng.integers(0, 16**digits)):0{digits}x}"
            if value not in self.used:
                self.used.add(value)
                return value


def plan_dataset(
    n_patients: int,
    n_slices: int,
    matrix: int,
    hemorrhage_fraction: float,
    seed: int,
    quirks: bool | None = None,
    min_slices: int | None = None,
) -> DatasetPlan:
    """One series per patient; quirks are on by default when there are at least 4 patients.

    Series have `n_slices` slices, or, with `min_slices`, a length drawn uniformly from
    min_slices..n_slices (real series differ in length); a `min_slices` above `n_slices`
    means every series has `n_slices` (a short test set with the stage's defaults).
    """
    _check_sizes(n_patients, n_slices, matrix, hemorrhage_fraction)
    low = n_slices if min_slices is None else min(min_slices, n_slices)
    if low < 1:
        raise ValueError(f"min_slices must be at least 1, got {min_slices}")
    rng = np.random.default_rng(seed)
    ids = _HexIds(rng)
    seeds = np.random.SeedSequence(seed).spawn(n_patients)
    kinds = _lesion_kinds(rng, n_patients, hemorrhage_fraction)
    lengths = rng.integers(low, n_slices + 1, size=n_patients)
    ages = rng.uniform(20, 90, size=n_patients)
    mimic_kinds = _mimic_kinds(rng, ages, [not k for k in kinds])
    series = []
    for i in range(n_patients):
        encoding = "unsigned12" if rng.random() < 0.25 else "signed16"
        series.append(
            SeriesPlan(
                patient_id=ids.new(8),
                study_uid=ids.new(10),
                series_uid=ids.new(10),
                image_ids=[ids.new(9) for _ in range(int(lengths[i]))],
                seed=seeds[i],
                rows=matrix,
                cols=matrix,
                lesion_kinds=kinds[i],
                mimic_kinds=mimic_kinds[i],
                age=float(np.round(ages[i], 1)),
                encoding=encoding,
                fov_padding=encoding == "signed16" and rng.random() < 0.5,
                window=(float(rng.choice([30.0, 36.0, 40.0])), 80.0),
            )
        )
    duplicated: list[str] = []
    if quirks if quirks is not None else n_patients >= 4:
        duplicated = _assign_quirks(rng, series, matrix)
    return DatasetPlan(series, duplicated)


def _check_sizes(n_patients: int, n_slices: int, matrix: int, hemorrhage_fraction: float) -> None:
    if n_patients < 1 or n_slices < 1:
        raise ValueError(f"need at least one patient and one slice, got {n_patients} x {n_slices}")
    if matrix < 32:
        raise ValueError(f"matrix {matrix} is too small for a head image (at least 32 pixels)")
    if not 0.0 <= hemorrhage_fraction <= 1.0:
        raise ValueError(f"hemorrhage_fraction must be in [0, 1], got {hemorrhage_fraction}")


def _lesion_kinds(rng: np.random.Generator, n_patients: int, fraction: float) -> list[list[str]]:
    """Which bleeds each patient has: every subtype once before any repeats, some mixed."""
    n_bleeding = int(round(n_patients * fraction))
    bleeding = rng.permutation(n_patients)[:n_bleeding]
    kinds: list[list[str]] = [[] for _ in range(n_patients)]
    for order, patient in enumerate(bleeding):
        first = SUBTYPES[order % len(SUBTYPES)]
        extra = [k for k in rng.permutation(SUBTYPES) if k != first]
        n_extra = int(rng.choice([0, 0, 1, 2]))
        kinds[patient] = [first] + [str(k) for k in extra[:n_extra]]
    return kinds


# Healthy patients that carry each optional mimic at least (when there are that many):
# rare ones would otherwise be missing from a benchmark of a few dozen series.
MIN_HEALTHY_CARRIERS = 2


def _mimic_kinds(
    rng: np.random.Generator, ages: np.ndarray, healthy: list[bool]
) -> list[list[str]]:
    """Optional mimics per patient: drawn by prevalence for the age, then topped up."""
    chosen = [
        [k for k in OPTIONAL_MIMICS if rng.random() < prevalence(k, float(age))] for age in ages
    ]
    pool = [i for i, h in enumerate(healthy) if h]
    for kind in OPTIONAL_MIMICS:
        carriers = [i for i in pool if kind in chosen[i]]
        others = [i for i in pool if kind not in chosen[i]]
        missing = min(MIN_HEALTHY_CARRIERS, len(pool)) - len(carriers)
        for i in rng.permutation(others)[: max(missing, 0)]:
            chosen[int(i)].append(kind)
    return [sorted(c, key=OPTIONAL_MIMICS.index) for c in chosen]


def _assign_quirks(rng: np.random.Generator, series: list[SeriesPlan], matrix: int) -> list[str]:
    """Give each series-level quirk to a different patient (as far as patients go)."""
    order = rng.permutation(len(series))
    for quirk, index in zip(SERIES_QUIRKS, np.resize(order, len(SERIES_QUIRKS)), strict=True):
        plan = series[index]
        plan.quirks.append(quirk)
        if quirk == "multivalue_window":
            plan.multivalue_window = True
        elif quirk == "rsna12_encoding":
            plan.encoding, plan.fov_padding = "rsna12", False
        elif quirk == "non_default_matrix":
            plan.cols = matrix + matrix // 4
        elif quirk == "gantry_tilt":
            plan.tilt_deg = float(np.round(rng.uniform(10, 20), 1))
    long_enough = [s for s in series if s.n_slices >= MIN_SLICES_FOR_TRUNCATION]
    truncated_id = None
    if long_enough:
        victim = long_enough[int(rng.integers(len(long_enough)))]
        # The top slice: the rest of the series still stacks with a regular step.
        victim.truncated_k = victim.n_slices - 1
        victim.quirks.append("truncated_pixel_data")
        truncated_id = victim.image_ids[victim.truncated_k]
    pool = [i for s in series for i in s.image_ids if i != truncated_id]
    return [str(i) for i in rng.choice(pool, size=min(4, len(pool)), replace=False)]
