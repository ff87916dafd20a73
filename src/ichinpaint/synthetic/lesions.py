"""Intracranial hemorrhages of the five RSNA subtypes, as 3-D shapes in patient space.

Each lesion is a function of the patient's LPS points and the tissue there, so it spans
adjacent 5 mm slices the way a real bleed does and follows the anatomy: extra-axial
blood lies under the inner skull table (epidural: short, thick, biconvex; subdural:
long, thin, crescent), parenchymal blood forms irregular blobs with a hypodense edema
rim, ventricular blood fills the dependent (posterior) part of a ventricle, and
subarachnoid blood replaces CSF in sulci and cisterns. Acute blood is 50-90 HU; a share
of the bleeds is subacute and nearly isodense to brain (35-50 HU), as a days-old subdural
or parenchymal bleed is on real CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ichinpaint.constants import SUBTYPES

from .anatomy import Fields, Head


@dataclass(frozen=True)
class Lesion:
    """One bleed. `kind` is an RSNA subtype; the shape parameters depend on it."""

    kind: str
    centre: np.ndarray  # LPS mm
    blood_hu: float
    radius: float  # extent (mm)
    thickness: float = 0.0  # extra-axial: maximal thickness (mm)
    side: float = 0.0  # extra-axial: sign of the template LR coordinate (hemisphere)
    level_y: float = np.inf  # intraventricular: fluid level (LPS y); blood where y > level
    blobs: tuple = field(default_factory=tuple)  # intraparenchymal: (offset, radii) pairs
    wiggle_k: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    wiggle_phase: np.ndarray = field(default_factory=lambda: np.zeros(2))
    edema_hu: float = 0.0

    @property
    def reach(self) -> float:
        """Radius (mm) around `centre` beyond which this lesion has no blood (or edema)."""
        if self.kind == "intraparenchymal":
            return 1.5 * max(np.linalg.norm(o) + max(r) for o, r in self.blobs)
        return 1.3 * self.radius

    def near_plane(
        self, plane_point: np.ndarray, normal: np.ndarray, half_thickness: float
    ) -> bool:
        """Whether the lesion can touch a slab: skipping far slices saves most of the work."""
        distance = abs(float(np.dot(self.centre - plane_point, normal)))
        return distance <= self.reach + half_thickness

    def indicator(self, points: np.ndarray, f: Fields, head: Head) -> np.ndarray:
        """Boolean: which points are blood (before mixing with CSF)."""
        return _INDICATORS[self.kind](self, points, f, head)

    def occupancy(self, hit: np.ndarray, f: Fields) -> np.ndarray:
        """Fraction of each point's HU that becomes blood: whole for a mass, CSF share in CSF spaces."""
        if self.kind in ("intraventricular", "subarachnoid"):
            return hit * np.clip(f.csf, 0.0, 1.0)
        return hit.astype(np.float32)


def _inside_mm(f: Fields, head: Head) -> np.ndarray:
    """Distance (mm) inside the inner skull table; negative in the skull."""
    return head.csf_rim_mm - f.depth


def _wiggle(lesion: Lesion, points: np.ndarray) -> np.ndarray:
    """Smooth irregularity in [-1, 1] so shapes are not perfect spheres."""
    waves = np.sin(points @ lesion.wiggle_k.T + lesion.wiggle_phase)
    return waves.mean(-1)


def _extra_axial(
    lesion: Lesion, points: np.ndarray, f: Fields, head: Head, power: float
) -> np.ndarray:
    r = np.linalg.norm(points - lesion.centre, axis=-1) / lesion.radius
    r = r * (1 + 0.12 * _wiggle(lesion, points))
    profile = np.clip(1.0 - r**power, 0.0, None)
    if power > 2:  # subdural: flat for most of its length, tapering at the ends
        profile = np.sqrt(profile)
    inside = _inside_mm(f, head)
    same_side = f.lr * lesion.side > 1.0  # never across the falx
    return (inside >= -0.3) & (inside <= lesion.thickness * profile) & (r < 1) & same_side


def _epidural(lesion, points, f, head):
    return _extra_axial(lesion, points, f, head, power=2.0)


def _subdural(lesion, points, f, head):
    return _extra_axial(lesion, points, f, head, power=4.0)


def _blob_distance(lesion: Lesion, points: np.ndarray) -> np.ndarray:
    """Normalised distance to the nearest ellipsoid of the blob (1 = on its surface)."""
    best = np.full(points.shape[:-1], np.inf, dtype=np.float32)
    for offset, radii in lesion.blobs:
        d = np.linalg.norm((points - lesion.centre - offset) / radii, axis=-1)
        best = np.minimum(best, d)
    return best * (1 + 0.15 * _wiggle(lesion, points))


def _intraparenchymal(lesion, points, f, head):
    return (_blob_distance(lesion, points) < 1.0) & (_inside_mm(f, head) > 1.5)


def _intraventricular(lesion, points, f, head):
    near = np.linalg.norm(points - lesion.centre, axis=-1) < lesion.radius * (
        1 + 0.15 * _wiggle(lesion, points)
    )
    return near & (f.ventricles > 0.5) & (points[..., 1] > lesion.level_y)


def _subarachnoid(lesion, points, f, head):
    near = np.linalg.norm(points - lesion.centre, axis=-1) < lesion.radius * (
        1 + 0.25 * _wiggle(lesion, points)
    )
    # Sulci, fissures and cisterns: CSF inside the brain envelope, not the outer rim under
    # the skull (blood there would read as a thin subdural).
    return near & (f.csf > 0.45) & (f.ventricles < 0.3) & (f.depth < -1.0)


_INDICATORS = {
    "epidural": _epidural,
    "subdural": _subdural,
    "intraparenchymal": _intraparenchymal,
    "intraventricular": _intraventricular,
    "subarachnoid": _subarachnoid,
}
# Bleeds whose shape needs the ventricle map (the rest can skip sampling it).
USES_VENTRICLES = ("intraventricular", "subarachnoid")
# Painting order: later bleeds cover earlier ones where they overlap.
PAINT_ORDER = ("intraparenchymal", "intraventricular", "subarachnoid", "subdural", "epidural")


def paint(
    lesions: list[Lesion], hu: np.ndarray, points: np.ndarray, f: Fields, head: Head
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Blood into the HU points; returns the new HU and, per subtype, which points are blood."""
    shape = hu.shape
    hu = hu.reshape(-1).copy()
    flat_points = points.reshape(-1, 3)
    masks = {kind: np.zeros(hu.shape, dtype=bool) for kind in SUBTYPES}
    for lesion in sorted(lesions, key=lambda x: PAINT_ORDER.index(x.kind)):
        # Work only on the points the lesion can reach: most of a slice is far away.
        near = np.flatnonzero(_could_hit(lesion, f, head))
        offset = flat_points[near] - lesion.centre
        near = near[np.einsum("ij,ij->i", offset, offset) <= lesion.reach**2]
        if len(near) == 0:
            continue
        p, sub = flat_points[near], f.take(near)
        if lesion.kind == "intraparenchymal" and lesion.edema_hu > 0:
            rim = _blob_distance(lesion, p)
            edema = (rim >= 1.0) & (rim < 1.35) & (sub.gm + sub.wm > 0.4)
            hu[near[edema]] -= lesion.edema_hu
        hit = lesion.indicator(p, sub, head)
        share = lesion.occupancy(hit, sub)
        hu[near] += share * (lesion.blood_hu - hu[near])
        hit_index = near[hit]
        for other in masks.values():  # a later bleed hides an earlier one
            other[hit_index] = False
        masks[lesion.kind][hit_index] = True
    return hu.reshape(shape), {kind: m.reshape(shape) for kind, m in masks.items()}


def _could_hit(lesion: Lesion, f: Fields, head: Head) -> np.ndarray:
    """A cheap flat pre-selection by tissue, before any geometry is computed."""
    if lesion.kind in ("epidural", "subdural"):
        inside = _inside_mm(f, head).reshape(-1)
        # Never into the skull: blood lies inside the inner table, so every lesion voxel
        # is also intracranial (ground_truth brain), as a reader would outline it.
        return (inside >= 0.0) & (inside <= lesion.thickness + 0.5)
    if lesion.kind == "intraventricular":
        return f.ventricles.reshape(-1) > 0.5
    if lesion.kind == "subarachnoid":
        return (f.csf.reshape(-1) > 0.45) & (f.depth.reshape(-1) < -1.0)
    return f.depth.reshape(-1) < head.csf_rim_mm


@dataclass
class SeedPoints:
    """Coarse samples of a whole series (centre plane of each slice), to place bleeds on."""

    points: np.ndarray  # (n, 3) LPS
    slice_index: np.ndarray  # (n,)
    fields: Fields  # flattened to (n,)
    ras: np.ndarray | None = None  # (n, 3) template coordinates (MNI mm)


# Share of bleeds of each kind drawn subacute (nearly isodense, SUBACUTE_HU).
SUBACUTE_SHARE = {
    "epidural": 0.05,
    "intraparenchymal": 0.2,
    "intraventricular": 0.1,
    "subarachnoid": 0.1,
    "subdural": 0.3,
}
SUBACUTE_HU = (36.0, 50.0)


def preferred(kind: str, seeds: SeedPoints, options: np.ndarray) -> np.ndarray:
    """The subset of `options` where a bleed of `kind` typically lies (may be empty).

    Intraventricular blood layers in the occipital horns and atria; subarachnoid blood
    fills the basal cisterns (around the circle of Willis) as often as the sulci.
    """
    if seeds.ras is None or kind not in ("intraventricular", "subarachnoid"):
        return options
    ras = seeds.ras[options]
    if kind == "intraventricular":
        return options[ras[:, 1] < -25.0]
    return options[(ras[:, 2] < 0.0) & (np.abs(ras[:, 0]) < 30.0) & (ras[:, 2] > -40.0)]


def candidates(kind: str, seeds: SeedPoints, head: Head, n_slices: int) -> np.ndarray:
    """Indices of seed points where a bleed of `kind` can start."""
    f = seeds.fields
    inside = _inside_mm(f, head)
    # Keep bleeds away from the first and last slice so they can span neighbours.
    if n_slices >= 3:
        interior = (seeds.slice_index >= 1) & (seeds.slice_index <= n_slices - 2)
    else:
        interior = np.ones(len(seeds.slice_index), bool)
    if kind in ("epidural", "subdural"):
        ok = (inside > 0.0) & (inside < 1.5) & (np.abs(f.lr) > 20)
    elif kind == "intraparenchymal":
        ok = (f.gm + f.wm > 0.8) & (inside > 12)
    elif kind == "intraventricular":
        ok = f.ventricles > 0.7
    else:
        ok = (f.csf > 0.5) & (f.ventricles < 0.2) & (f.depth < -3.0)
    return np.flatnonzero(ok & interior)


def random_lesion(kind: str, centre: np.ndarray, lr: float, rng: np.random.Generator) -> Lesion:
    """Draw size, density and irregularity for a bleed of `kind` starting at `centre`."""
    wiggle_k = rng.normal(size=(2, 3)) * rng.uniform(0.1, 0.3)
    common = dict(
        kind=kind,
        centre=np.asarray(centre, float),
        wiggle_k=wiggle_k,
        wiggle_phase=rng.uniform(0, 2 * np.pi, 2),
    )
    lesion = _random_shape(kind, common, lr, centre, rng)
    if rng.random() < SUBACUTE_SHARE[kind]:
        return replace(lesion, blood_hu=float(rng.uniform(*SUBACUTE_HU)))
    return lesion


def _random_shape(
    kind: str, common: dict, lr: float, centre: np.ndarray, rng: np.random.Generator
) -> Lesion:
    if kind == "epidural":
        radius = _log_uniform(rng, 18, 45)
        return Lesion(
            **common,
            blood_hu=rng.uniform(60, 88),
            radius=radius,
            thickness=min(rng.uniform(6, 20), 0.5 * radius),
            side=np.sign(lr),
        )
    if kind == "subdural":
        return Lesion(
            **common,
            blood_hu=rng.uniform(50, 80),
            radius=_log_uniform(rng, 35, 90),
            thickness=_log_uniform(rng, 2.5, 12),
            side=np.sign(lr),
        )
    if kind == "intraparenchymal":
        size = _log_uniform(rng, 2.0, 28)
        blobs = []
        for i in range(int(rng.integers(1, 4))):
            offset = np.zeros(3) if i == 0 else rng.normal(size=3) * 0.5 * size
            blobs.append((offset, size * rng.uniform(0.6, 1.0, 3)))
        return Lesion(
            **common,
            blood_hu=rng.uniform(55, 88),
            radius=size,
            blobs=tuple(blobs),
            edema_hu=float(rng.uniform(4, 10)) if size > 6 else 0.0,
        )
    if kind == "intraventricular":
        radius = _log_uniform(rng, 8, 35)
        # Supine patient: blood settles posteriorly (LPS +y); sometimes a full cast.
        level = centre[1] + rng.uniform(-0.6, 0.3) * radius
        if rng.random() < 0.35:
            level = -np.inf
        return Lesion(**common, blood_hu=rng.uniform(50, 75), radius=radius, level_y=level)
    return Lesion(**common, blood_hu=rng.uniform(50, 80), radius=_log_uniform(rng, 10, 40))


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))
