"""Healthy structures that look like disease on CT: the "mimics" of synthetic data v2.

Bright ones (calcified choroid plexus and pineal, falx and tentorium, dural venous
sinuses, basal ganglia calcification, skull-base bone) fool hyperdensity rules and
inpainting detectors; dark ones (old infarct, arachnoid cyst) fool unsigned ones.
Prevalence and HU figures, with their sources: docs/synthetic-data.md.

Every structure is a shape in template space (MNI RAS mm, before the head's scaling),
so it moves, scales and deforms with the patient's head. Shapes are tested only on
the points of a slab whose template z range reaches them: most slices meet few.
The skull base (orbits, sinuses, petrous bone, clivus, mastoids) is built the same
way, outside the intracranial space, and bone that intrudes into it (petrous ridges,
dorsum sellae) makes the partial-volume bands a real skull-base slice shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ichinpaint.constants import MIMIC_CODES

# Optional mimics: present in some patients only (the rest are anatomy every head has).
OPTIONAL_MIMICS = ("choroid_plexus", "pineal", "basal_ganglia", "old_infarct", "arachnoid_cyst")
# Always present: the dura and its sinuses, the skull base and its streaks.
ANATOMICAL_MIMICS = ("falx", "tentorium", "venous_sinus", "skull_base", "beam_hardening")


def prevalence(kind: str, age: float) -> float:
    """Chance that an adult of `age` shows an optional mimic (docs/synthetic-data.md).

    Choroid plexus and pineal calcification are common and rise with age. Basal
    ganglia calcification (~1 % of CTs), arachnoid cysts (~1-2 %) and old infarcts
    are enriched here (and `plan` guarantees a few healthy carriers) so that a
    benchmark of a few dozen series contains each of them at all.
    """
    older = age >= 40
    return {
        "choroid_plexus": 0.75 if older else 0.45,
        "pineal": 0.7 if older else 0.45,
        "basal_ganglia": 0.06,
        "old_infarct": 0.15 if older else 0.03,
        "arachnoid_cyst": 0.06,
    }[kind]


def tentorium_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Template z (mm) of the tentorium: a tent, highest at the apex behind the midbrain,
    sloping down laterally and backwards to its attachment along the transverse sinuses."""
    return -2.0 - 0.42 * np.abs(x) - 0.18 * np.maximum(0.0, -y - 45.0)


@dataclass(frozen=True)
class Blob:
    """An ellipsoid (template mm) with a density; `kind` is its mimic label or '' for none."""

    kind: str
    centre: np.ndarray
    semi: np.ndarray
    hu: float
    mode: str = "set"  # set: replace HU; tissue: replace brain tissue only (hypodense)

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        return self.centre - self.semi, self.centre + self.semi

    def inside(self, ras: np.ndarray) -> np.ndarray:
        return (((ras - self.centre) / self.semi) ** 2).sum(-1) < 1.0


@dataclass(frozen=True)
class Tube:
    """A capsule from a to b with a radius (template mm)."""

    kind: str
    a: np.ndarray
    b: np.ndarray
    radius: float
    hu: float

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum(self.a, self.b) - self.radius, np.maximum(self.a, self.b) + self.radius

    def inside(self, ras: np.ndarray) -> np.ndarray:
        ab = self.b - self.a
        t = np.clip(((ras - self.a) @ ab) / float(ab @ ab), 0.0, 1.0)
        closest = self.a + t[:, None] * ab
        return ((ras - closest) ** 2).sum(-1) < self.radius**2


@dataclass(frozen=True)
class PatientMimics:
    """One patient's mimics: which are present and their sizes and densities."""

    intracranial: tuple  # Blob/Tube painted inside the skull (calcifications, cysts, ...)
    base: tuple  # skull-base Blob/Tube outside (and partly inside) the skull
    dura_hu: float  # falx and tentorium (non-calcified dense dura)
    dura_half_mm: float  # half thickness of the dural sheets
    sinus_hu: float  # unclotted blood in the dural venous sinuses
    sss_width_mm: float
    transverse_radius: tuple[float, float]  # right, left (the right one usually dominates)
    streak_hu: float  # depth of the dark band between the petrous bones
    streak_angles: np.ndarray = field(default_factory=lambda: np.zeros(0))
    streak_amps: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _jitter(rng: np.random.Generator, centre, mm: float) -> np.ndarray:
    return np.asarray(centre, float) + rng.uniform(-mm, mm, 3)


def random_mimics(rng: np.random.Generator, present: list[str], csf_hu: float) -> PatientMimics:
    """Draw one patient's mimics; `present` lists the optional kinds this patient has."""
    inner: list = []
    if "choroid_plexus" in present:
        sides = [1.0, -1.0] if rng.random() < 0.85 else [float(rng.choice([1.0, -1.0]))]
        for side in sides:
            inner.append(
                Blob(
                    "choroid_plexus",
                    _jitter(rng, (side * 27.0, -41.0, 14.0), 2.5),
                    rng.uniform([2.5, 3.5, 2.5], [4.5, 7.0, 4.5]),
                    float(rng.uniform(120, 380)),
                )
            )
    if "pineal" in present:
        inner.append(
            Blob(
                "pineal",
                _jitter(rng, (0.0, -31.0, 2.0), 1.5),
                rng.uniform([2.0, 2.5, 2.0], [4.0, 5.0, 4.0]),
                float(rng.uniform(120, 450)),
            )
        )
    if "basal_ganglia" in present:
        hu = float(rng.uniform(90, 260))
        semi = rng.uniform([2.5, 4.0, 2.5], [5.0, 8.0, 5.0])
        for side in (1.0, -1.0):  # the globus pallidus, symmetric
            inner.append(
                Blob("basal_ganglia", _jitter(rng, (side * 19.0, -3.0, 0.0), 1.5), semi, hu)
            )
    if rng.random() < 0.12:  # calcified plaques in the falx (dura), a few mm each
        for _ in range(int(rng.integers(1, 4))):
            centre = (0.0, rng.uniform(-40, 40), rng.uniform(30, 65))
            inner.append(
                Blob(
                    "falx",
                    np.asarray(centre),
                    rng.uniform([1.0, 3, 2], [1.8, 9, 5]),
                    float(rng.uniform(200, 600)),
                )
            )
    if "old_infarct" in present:
        inner.append(_old_infarct(rng, csf_hu))
    if "arachnoid_cyst" in present:
        inner.append(_arachnoid_cyst(rng, csf_hu))
    angles = rng.uniform(-0.5, 0.5, 6) + np.repeat([0.0, np.pi / 2, np.pi / 4], 2)
    return PatientMimics(
        intracranial=tuple(inner),
        base=_skull_base(rng),
        dura_hu=float(rng.uniform(55, 75)),
        dura_half_mm=float(rng.uniform(0.7, 1.1)),
        sinus_hu=float(rng.uniform(45, 65)),
        sss_width_mm=float(rng.uniform(7, 10)),
        transverse_radius=(float(rng.uniform(3.5, 5.0)), float(rng.uniform(2.5, 4.5))),
        streak_hu=float(rng.uniform(8, 22)),
        streak_angles=angles,
        streak_amps=rng.uniform(5, 14, 6) * rng.choice([-1.0, 1.0], 6),
    )


def _old_infarct(rng: np.random.Generator, csf_hu: float) -> Blob:
    """Encephalomalacia: a cortical wedge in a territory, or a small deep lacune."""
    if rng.random() < 0.4:
        side = float(rng.choice([1.0, -1.0]))
        centre = _jitter(rng, (side * 22.0, rng.uniform(-15, 10), rng.uniform(-2, 12)), 2.0)
        return Blob(
            "old_infarct", centre, rng.uniform(2.5, 6.0, 3), csf_hu + rng.uniform(4, 10), "tissue"
        )
    side = float(rng.choice([1.0, -1.0]))
    # Cortex of the MCA (lateral), ACA (parasagittal) or PCA (occipital) territory.
    spots = [(side * 55.0, -10.0, 20.0), (side * 12.0, 20.0, 50.0), (side * 20.0, -85.0, 5.0)]
    centre = _jitter(rng, spots[int(rng.integers(3))], 6.0)
    return Blob("old_infarct", centre, rng.uniform(8, 20, 3), csf_hu + rng.uniform(3, 12), "tissue")


def _arachnoid_cyst(rng: np.random.Generator, csf_hu: float) -> Blob:
    """CSF-density extra-axial cyst, most often in the middle cranial fossa."""
    side = float(rng.choice([1.0, -1.0]))
    where = rng.random()
    if where < 0.6:
        centre = (side * 42.0, 12.0, -28.0)
    elif where < 0.85:
        centre = (side * 8.0, -82.0, -42.0)  # retrocerebellar
    else:
        centre = (side * 50.0, rng.uniform(-40, 20), 35.0)  # convexity
    return Blob(
        "arachnoid_cyst", _jitter(rng, centre, 3.0), rng.uniform(9, 20, 3), csf_hu, "tissue"
    )


def _skull_base(rng: np.random.Generator) -> tuple:
    """Orbits, paranasal sinuses, petrous and mastoid, clivus, upper neck (template mm).

    Order matters: later shapes paint over earlier ones (air cells inside bone, the
    globe inside the orbital fat).
    """
    j = lambda c, mm=2.0: _jitter(rng, c, mm)  # noqa: E731
    bone = float(rng.uniform(1400, 1900))
    shapes: list = [
        Blob("", j((0, 12, -78)), np.array([60.0, 75.0, 32.0]), 45.0),  # neck and face muscle
        Tube("", j((0, -42, -72)), j((0, -46, -110)), 16.0, bone * 0.7),  # atlas / spine
        Tube("", j((0, -42, -66)), j((0, -46, -110)), 9.0, 8.0),  # spinal canal CSF
        Tube("", j((0, -43, -66)), j((0, -46, -110)), 5.5, 33.0),  # cord
        Tube("", j((0, -8, -24)), j((0, -28, -62)), 5.5, bone * 0.9),  # clivus
        Blob("", j((0, 12, -35)), np.array([16.0, 15.0, 11.0]), bone * 0.8),  # sphenoid body
        Blob("", j((0, 13, -36)), rng.uniform([10, 9, 6], [13, 12, 8]), -900.0),  # sphenoid sinus
        Tube("", j((0, -13, -22)), j((0, -12, -17)), 3.0, bone),  # dorsum sellae
        Blob("", j((0, 50, -58)), np.array([14.0, 28.0, 20.0]), -950.0),  # nasal cavity
        Blob("", j((0, 12, -62)), np.array([13.0, 12.0, 12.0]), -950.0),  # nasopharynx
        Blob("", j((0, 48, -32)), np.array([11.0, 18.0, 12.0]), -600.0),  # ethmoid cells
    ]
    for side in (1.0, -1.0):
        s = np.array([side, 1.0, 1.0])
        shapes += [
            Blob(
                "", j((30, 48, -64)) * s, rng.uniform([12, 14, 14], [16, 18, 18]), -950.0
            ),  # maxillary
            Blob("", j((31, 50, -38)) * s, np.array([17.0, 27.0, 16.0]), -90.0),  # orbital fat
            Blob("", j((31, 62, -38), 1.0) * s, np.array([12.0, 12.0, 12.0]), 12.0),  # globe
            Blob("", j((31, 60, -38), 1.0) * s, np.array([4.0, 3.0, 4.0]), 95.0),  # lens
            Tube("", j((22, 40, -38)) * s, j((14, 18, -36)) * s, 3.0, 45.0),  # optic nerve
            Tube("petrous", j((58, -37, -36)) * s, j((24, -17, -34)) * s, 7.0, bone * 1.15),
            Blob(
                "", j((52, -44, -44)) * s, rng.uniform([8, 9, 9], [12, 13, 13]), -500.0
            ),  # mastoid
            Tube("", j((46, 15, -80)) * s, j((50, 5, -52)) * s, 6.0, bone),  # mandibular ramus
        ]
    if rng.random() < 0.8:  # frontal sinus (absent in some adults)
        shapes.append(Blob("", j((0, 70, 8), 3.0), rng.uniform([10, 4, 8], [18, 6, 14]), -900.0))
    return tuple(shapes)


class PointIndex:
    """Finds the sub-plane points of a slab near a template-space box, from the coarse grid.

    Testing every shape against every point of a slab costs more than the shapes
    themselves; the coarse grid (every `stride`-th pixel, see geometry.points) tells
    which rectangle of pixels can reach a box.
    """

    def __init__(self, coarse: np.ndarray, rows: int, cols: int, cell_mm: float) -> None:
        self.coarse = coarse  # (SUBPLANES, r', c', 3) template RAS
        self.shape = (coarse.shape[0], rows, cols)
        self.row_pos = np.linspace(0, rows - 1, coarse.shape[1])
        self.col_pos = np.linspace(0, cols - 1, coarse.shape[2])
        self.cell_mm = cell_mm
        self.z_range = (
            float(coarse[..., 2].min()) - cell_mm,
            float(coarse[..., 2].max()) + cell_mm,
        )

    def near(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        """Flat indices (into the (SUBPLANES, rows, cols) points) of a pixel rectangle
        that holds every point inside the box [lo, hi]; None when none can be."""
        if hi[2] < self.z_range[0] or lo[2] > self.z_range[1]:
            return None
        c = self.coarse
        hit = np.all((c >= lo - self.cell_mm) & (c <= hi + self.cell_mm), axis=-1).any(0)
        if not hit.any():
            return None
        r = np.flatnonzero(hit.any(1))
        k = np.flatnonzero(hit.any(0))
        r0, r1 = _span(self.row_pos, r)
        c0, c1 = _span(self.col_pos, k)
        planes, rows, cols = self.shape
        grid = (
            np.arange(planes)[:, None, None] * rows * cols
            + np.arange(r0, r1 + 1)[None, :, None] * cols
            + np.arange(c0, c1 + 1)[None, None, :]
        )
        return grid.reshape(-1)


def _span(pos: np.ndarray, hit: np.ndarray) -> tuple[int, int]:
    """Full-resolution pixel range covering coarse samples `hit` and one more each side."""
    low = pos[max(int(hit[0]) - 1, 0)]
    high = pos[min(int(hit[-1]) + 1, len(pos) - 1)]
    return int(np.floor(low)), int(np.ceil(high))


@dataclass
class MimicPaint:
    """What painting mimics produced at the flattened points of a slab."""

    hu: np.ndarray
    kind: np.ndarray  # uint8 MIMIC_CODES (0 none) per point
    base_bone: np.ndarray  # bool: skull-base bone laid over the intracranial space


def paint_skull_base(
    m: PatientMimics,
    hu: np.ndarray,
    ras: np.ndarray,
    points: PointIndex,
    intracranial: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Skull-base anatomy over flat HU points (in place).

    Returns where bone intrudes into the intracranial space and where petrous bone is
    (the source of beam-hardening streaks). Outside the intracranial space every shape
    paints; inside it only bone does (the petrous ridges and dorsum sellae rise between
    the fossae), never air or fat.
    """
    intrusion = np.zeros(len(hu), bool)
    petrous = np.zeros(len(hu), bool)
    for shape in m.base:
        index = points.near(*shape.box())
        if index is None:
            continue
        index = index[shape.inside(ras[index])]
        if shape.hu < 300:  # soft tissue, fat and air stay outside the skull
            index = index[~intracranial[index]]
        else:
            intrusion[index[intracranial[index]]] = True
        if shape.kind == "petrous":
            petrous[index] = True
        hu[index] = shape.hu
    return intrusion, petrous


def paint_intracranial(
    m: PatientMimics,
    hu: np.ndarray,
    ras: np.ndarray,
    points: PointIndex,
    inside_mm: np.ndarray,
    tissue: np.ndarray,
    half_pixel_mm: float,
) -> np.ndarray:
    """Dura, sinuses, calcifications and hypodense variants over flat HU points (in place).

    Returns the mimic code of every point (0: none). `inside_mm` is the distance
    inside the inner table (negative in the skull), `tissue` the brain tissue share.
    """
    kind = np.zeros(len(hu), np.uint8)
    intracranial = np.flatnonzero(inside_mm >= 0)
    p = ras[intracranial]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    inside = inside_mm[intracranial]
    tent = tentorium_z(x, y)
    # Sheets are at least a pixel thick, or point sampling would break the line up.
    half = max(m.dura_half_mm, half_pixel_mm)
    # Falx cerebri: midline sheet above its free edge (over the callosum) and the tentorium.
    edge = np.maximum(34.0 - 0.012 * (y + 10.0) ** 2, tent)
    falx = (np.abs(x) < half) & (z > edge)
    _set(hu, kind, intracranial[falx], m.dura_hu, "falx")
    # Tentorium cerebelli: outside the incisura (the notch around the midbrain).
    notch = (x / 15.0) ** 2 + ((y + 22.0) / 30.0) ** 2 < 1.0
    tentorium = (np.abs(z - tent) < half) & ~notch & (y < -12.0 - 0.45 * np.abs(x))
    _set(hu, kind, intracranial[tentorium], m.dura_hu, "tentorium")
    _set(hu, kind, intracranial[_sinuses(m, x, y, z, inside, tent)], m.sinus_hu, "venous_sinus")
    for shape in m.intracranial:
        index = points.near(*shape.box())
        if index is None:
            continue
        index = index[shape.inside(ras[index]) & (inside_mm[index] >= 0)]
        if shape.mode == "tissue":  # hypodense: brain becomes CSF-like, CSF stays
            index = index[tissue[index] > 0.3]
            if shape.kind == "arachnoid_cyst":  # a cyst displaces everything, dura included
                index = index[kind[index] == 0]
        _set(hu, kind, index, shape.hu, shape.kind)
    return kind


def _sinuses(m: PatientMimics, x, y, z, inside, tent) -> np.ndarray:
    """Superior sagittal, straight, transverse and sigmoid sinuses (boolean per point)."""
    depth_sss = 0.9 * m.sss_width_mm
    # Superior sagittal: a triangle under the inner table in the midline, front to back.
    sss = (
        (inside < depth_sss)
        & (np.abs(x) < 0.5 * m.sss_width_mm * (1 - inside / depth_sss))
        & ((z > 0.0) | (y < -80.0))
        & (z > tent - 4.0)
    )
    # Straight sinus: from the vein of Galen back to the torcula along the falx-tentorium join.
    t = np.clip((-48.0 - y) / 50.0, 0.0, 1.0)
    straight = (
        (y < -46.0)
        & (np.abs(x) < 2.8)
        & (np.abs(z - (2.0 + t * (tentorium_z(0 * y, y) - 5.0))) < 2.8)
    )
    # Transverse: along the tentorium's attachment to the occipital bone; sigmoid: down
    # the posterior fossa wall to the jugular foramen.
    radius = np.where(x < 0, m.transverse_radius[0], m.transverse_radius[1])  # RAS x<0 = right
    transverse = (y < -45.0) & (inside < 2 * radius) & (np.abs(z - (tent - radius)) < radius)
    sigmoid_centre_z = -10.0 + 0.9 * (y + 70.0)  # descends forward from y=-70
    sigmoid = (
        (np.abs(x) > 35.0)
        & (y > -75.0)
        & (y < -40.0)
        & (inside < 2 * radius)
        & (np.abs(z - np.minimum(sigmoid_centre_z, tent - radius)) < radius)
    )
    return sss | straight | transverse | sigmoid


def _set(hu: np.ndarray, kind: np.ndarray, index: np.ndarray, value: float, name: str) -> None:
    hu[index] = value
    kind[index] = MIMIC_CODES[name] if name else 0


def streaks(m: PatientMimics, petrous_share: np.ndarray, spacing_mm: float) -> np.ndarray | None:
    """Beam-hardening artefact (HU to add) of a slice with dense petrous bone in it.

    A dark band between the two petrous bones (the "interpetrous lucency") and thin
    alternating streaks radiating from each. None when the slice holds too little
    petrous bone for streaks.
    """
    rows, cols = petrous_share.shape
    half = cols // 2
    centres = []
    for part in (np.s_[:, :half], np.s_[:, half:]):
        share = petrous_share[part]
        if share.sum() * spacing_mm**2 < 30.0:  # under ~30 mm^2 of bone: no streaks
            continue
        r, c = np.nonzero(share > 0)
        w = share[r, c]
        offset = 0 if part[1].start is None else half
        centres.append((np.average(r, weights=w), np.average(c, weights=w) + offset))
    if not centres:
        return None
    rr, cc = np.mgrid[:rows, :cols].astype(np.float32)
    total = np.zeros((rows, cols), np.float32)
    width = 4.0 / spacing_mm  # pixels
    if len(centres) == 2:
        (r0, c0), (r1, c1) = centres
        length = max(np.hypot(r1 - r0, c1 - c0), 1.0)
        ur, uc = (r1 - r0) / length, (c1 - c0) / length
        along = ((rr - r0) * ur + (cc - c0) * uc) / length
        across = (rr - r0) * uc - (cc - c0) * ur
        inside = np.clip(np.minimum(along, 1 - along) * 4, 0, 1)
        total -= m.streak_hu * inside * np.exp(-0.5 * (across / (2.5 * width)) ** 2)
    for (r0, c0), angles, amps in zip(
        centres, np.split(m.streak_angles, 2), np.split(m.streak_amps, 2), strict=False
    ):
        dist = np.hypot(rr - r0, cc - c0)
        fade = np.exp(-dist / (60.0 / spacing_mm))
        for angle, amp in zip(angles, amps, strict=True):
            across = (rr - r0) * np.cos(angle) - (cc - c0) * np.sin(angle)
            total += amp * fade * np.exp(-0.5 * (across / (0.5 * width)) ** 2)
    return total
