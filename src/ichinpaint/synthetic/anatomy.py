"""Head anatomy for the synthetic CT: the MNI template made into tissue maps, one head per patient.

The ICBM152 2009 templates bundled with nilearn (no download) give grey- and
white-matter probabilities and a skull-stripped T1. CT contrast comes from the tissue
probabilities (a T1 intensity means nothing in HU); skull, scalp and the CSF rim do not
exist in the template, so they are built as shells at a signed distance from a smoothed
brain envelope. Each patient gets their own similarity transform, smooth deformation,
ventricle enlargement and atrophy, so no two heads are the same and a model cannot
memorise one.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

# Centre of the head in MNI RAS mm (roughly the middle of the lateral ventricles),
# the point a patient's head is rotated and scaled about.
HEAD_CENTRE_MNI = np.array([0.0, -18.0, 18.0])
# Where the lateral ventricles sit (MNI RAS mm) and their extent, for enlargement.
VENTRICLE_CENTRE_MNI = np.array([0.0, -8.0, 16.0])
VENTRICLE_SIGMA_MM = np.array([18.0, 30.0, 16.0])
# Beyond this signed distance (mm) from the brain envelope everything is air.
OUTSIDE_DEPTH_MM = 60.0


@dataclass(frozen=True)
class Template:
    """Tissue maps of the MNI template, float32.

    `gm` and `wm` are on the 1 mm grid (voxel index = RAS mm - origin). The smooth maps
    are on a 2 mm grid (index = (RAS mm - origin) / 2), which is plenty for them and
    eight times cheaper to build and sample: `depth` is the signed distance (mm) to the
    smoothed brain envelope, negative inside the intracranial space and positive outside
    (skull and scalp are shells in `depth`); `ventricles` is 1 inside the lateral and
    third ventricles.
    """

    gm: np.ndarray
    wm: np.ndarray
    depth: np.ndarray
    ventricles: np.ndarray
    origin: np.ndarray


COARSE_MM = 2.0


# The ICBM152 2009a files nilearn ships in nilearn/datasets/data (no download). They are
# read directly: importing nilearn.datasets costs seconds (it pulls in scikit-learn).
TEMPLATE_FILES = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
}


def template_dir() -> Path:
    """Where nilearn keeps its bundled templates, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed: it provides the MNI152 templates")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def _read_scaled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A template as float32 in [0, 1] (the files store uint8 0..255), and its affine."""
    path = template_dir() / TEMPLATE_FILES[name]
    if not path.exists():
        raise FileNotFoundError(f"{path}: MNI152 template missing from the nilearn install")
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data / data.max(), img.affine


@functools.cache
def load_template() -> Template:
    """Build the tissue maps once per process (about a second): the same for every patient."""
    gm, affine = _read_scaled("gm")
    wm, _ = _read_scaled("wm")
    t1, _ = _read_scaled("t1")
    origin = np.asarray(affine[:3, 3], float)
    # nilearn's load_mni152_brain_mask is exactly this threshold of the T1.
    brain2 = _block_mean((t1 > 0.2).astype(np.float32)) > 0.5
    envelope = _smooth_envelope(brain2)
    depth = COARSE_MM * (
        ndimage.distance_transform_edt(~envelope) - ndimage.distance_transform_edt(envelope)
    )
    tissue2 = _block_mean(gm) + _block_mean(wm)
    ventricles = _ventricles(tissue2, depth, origin)
    return Template(gm, wm, depth.astype(np.float32), ventricles, origin)


def _block_mean(volume: np.ndarray) -> np.ndarray:
    """Average 2x2x2 blocks (the 1 mm grid -> the 2 mm grid), trimming an odd edge."""
    nx, ny, nz = (n // 2 * 2 for n in volume.shape)
    total = np.zeros((nx // 2, ny // 2, nz // 2), np.float32)
    for i, j, k in np.ndindex(2, 2, 2):
        total += volume[i:nx:2, j:ny:2, k:nz:2]
    return total / 8


def _smooth_envelope(brain: np.ndarray) -> np.ndarray:
    """The brain mask closed and filled slice by slice, so the skull hugs a smooth surface.

    Axial hole filling matters: the basal cisterns are holes in the template's mask that
    open downwards, and the skull must not grow into them.
    """
    closed = ndimage.binary_closing(np.pad(brain, 3), structure=_ball(2))[3:-3, 3:-3, 3:-3]
    filled = np.stack(
        [ndimage.binary_fill_holes(closed[:, :, z]) for z in range(brain.shape[2])], -1
    )
    return ndimage.binary_opening(filled, structure=_ball(1))


def _ball(radius: int) -> np.ndarray:
    grid = np.mgrid[-radius : radius + 1, -radius : radius + 1, -radius : radius + 1]
    return (grid**2).sum(0) <= radius**2


def _ventricles(tissue: np.ndarray, depth: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """CSF deep inside the brain near the midline: the lateral and third ventricles (2 mm grid)."""
    axes = [origin[i] + COARSE_MM * np.arange(n) for i, n in enumerate(tissue.shape)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    near_centre = (np.abs(x) < 32) & (y > -60) & (y < 40) & (z > -8) & (z < 40)
    candidate = (tissue < 0.45) & (depth < -14) & near_centre
    labels, n = ndimage.label(candidate)
    if n == 0:
        return np.zeros(tissue.shape, np.float32)
    sizes = ndimage.sum(candidate, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1
    mask = np.isin(labels, keep)
    return ndimage.gaussian_filter(mask.astype(np.float32), 0.5)


@dataclass(frozen=True)
class Head:
    """One patient's head: placement, shape variation and tissue densities (HU)."""

    centre_lps: np.ndarray  # where HEAD_CENTRE_MNI lands in patient LPS mm
    rotation: np.ndarray  # 3x3, template (LPS-oriented) -> patient LPS
    scale: np.ndarray  # per axis (LR, AP, SI)
    warp_k: np.ndarray  # (n_modes, 3) wave vectors (rad/mm) of the smooth deformation
    warp_phase: np.ndarray  # (n_modes,)
    warp_amp: np.ndarray  # (n_modes, 3) displacement amplitudes (mm)
    ventricle_gain: float  # 0 = template ventricles, 0.3 = clearly enlarged
    atrophy: float  # 0..0.35: sulci and ventricles widen as tissue probability is cut
    csf_rim_mm: float  # inner skull surface, distance outside the brain envelope
    skull_mm: float
    scalp_mm: float
    gm_hu: float
    wm_hu: float
    csf_hu: float
    bone_hu: float
    diploe_hu: float
    scalp_hu: float
    noise_hu: float
    # Reconstruction kernel: blur (mm, Gaussian sigma) and noise texture (cut-off of the
    # noise power spectrum, cycles/mm); sharper kernels blur less and make finer noise.
    psf_mm: float = 0.45
    noise_cutoff: float = 0.45
    rim_hu: float = 0.0  # brain next to the inner table is brighter (beam hardening)


def random_head(rng: np.random.Generator, table_z: float) -> Head:
    """Draw one patient's head; `table_z` is the LPS z of the head centre."""
    yaw, pitch, roll = np.radians([rng.uniform(-10, 10), rng.uniform(-8, 12), rng.uniform(-4, 4)])
    n_modes = 4
    directions = rng.normal(size=(n_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(60, 140, size=n_modes)
    atrophy = float(rng.choice([0.0, rng.uniform(0.0, 0.15), rng.uniform(0.15, 0.35)]))
    return Head(
        centre_lps=np.array([rng.uniform(-6, 6), rng.uniform(-8, 8), table_z]),
        rotation=_rotation(yaw, pitch, roll),
        # The MNI brain is larger than an average one (180 mm long): scale it down a little.
        scale=rng.uniform(0.86, 1.0) * rng.uniform(0.96, 1.04, size=3),
        warp_k=directions * (2 * np.pi / wavelengths)[:, None],
        warp_phase=rng.uniform(0, 2 * np.pi, size=n_modes),
        warp_amp=rng.normal(0, 1.6, size=(n_modes, 3)),
        ventricle_gain=float(rng.uniform(0.0, 0.15) + 1.2 * atrophy),
        atrophy=atrophy,
        csf_rim_mm=float(rng.uniform(1.0, 2.5) + 8 * atrophy),
        skull_mm=float(rng.uniform(5.5, 8.5)),
        scalp_mm=float(rng.uniform(4.0, 7.0)),
        gm_hu=float(rng.uniform(36, 41)),
        wm_hu=float(rng.uniform(25, 30)),
        csf_hu=float(rng.uniform(2, 10)),
        bone_hu=float(rng.uniform(1300, 1700)),
        diploe_hu=float(rng.uniform(550, 850)),
        scalp_hu=float(rng.uniform(25, 45)),
        noise_hu=float(rng.uniform(3.0, 5.5)),
        psf_mm=float(rng.uniform(0.35, 0.65)),
        noise_cutoff=float(rng.uniform(0.3, 0.6)),
        rim_hu=float(rng.uniform(2.0, 8.0)),
    )


def head_radius_mm(head: Head) -> float:
    """Largest distance from the head centre to the scalp surface in patient space (mm).

    The template's envelope reaches about 96 mm from HEAD_CENTRE_MNI (above the skull
    base, whatever the pitch); rim, skull and scalp add up to 20 mm, the deformation 6.
    """
    return float(96 * head.scale.max() + head.csf_rim_mm + head.skull_mm * 1.2 + head.scalp_mm + 6)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation about z (in-plane), x (pitch, nodding) and y (roll), in that order."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def template_coordinates(head: Head, points_lps: np.ndarray) -> np.ndarray:
    """Where patient points (..., 3) LPS mm fall in the template, as MNI RAS mm.

    Inverse of the head's placement: undo the translation, rotation and scaling, then
    apply the smooth deformation and pull points towards the ventricles (sampling
    nearer their centre makes them look larger).
    """
    local = (points_lps - head.centre_lps) @ head.rotation  # R^T (p - c), row vectors
    local = local / head.scale
    phases = local @ head.warp_k.T + head.warp_phase  # (..., n_modes)
    local = local + np.sin(phases) @ head.warp_amp
    ras = local * np.array([-1.0, -1.0, 1.0]) + HEAD_CENTRE_MNI  # LPS-oriented -> RAS
    offset = (ras - VENTRICLE_CENTRE_MNI) / VENTRICLE_SIGMA_MM
    pull = 1.0 - head.ventricle_gain * np.exp(-0.5 * (offset**2).sum(-1, keepdims=True))
    return VENTRICLE_CENTRE_MNI + (ras - VENTRICLE_CENTRE_MNI) * pull


@dataclass
class Fields:
    """Tissue at sampled points: probabilities after atrophy, depth (mm), ventricle 0..1.

    `lr` is the template's left-right coordinate (RAS x, mm): the midline is lr = 0
    whatever the head's pose, which keeps extra-axial bleeds on one side of the falx.
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    depth: np.ndarray
    ventricles: np.ndarray
    lr: np.ndarray

    def take(self, index: np.ndarray) -> Fields:
        """The fields at flat indices (the subset a lesion can reach)."""
        return Fields(*(a.reshape(-1)[index] for a in vars(self).values()))


def sample_depth(template: Template, ras: np.ndarray) -> np.ndarray:
    """Signed distance (mm) to the brain envelope at template RAS points (..., 3)."""
    coords = (ras.reshape(-1, 3) - template.origin).T / COARSE_MM
    return _sample(template.depth, coords, OUTSIDE_DEPTH_MM).reshape(ras.shape[:-1])


def sample_fields(
    template: Template,
    head: Head,
    ras: np.ndarray,
    depth: np.ndarray | None = None,
    ventricles: bool = True,
) -> Fields:
    """Trilinear samples of the tissue maps at template RAS points, with the head's atrophy.

    `depth` may be given when the caller has it already (interpolated from a coarse grid:
    a distance map is smooth enough for that). The ventricle map is only needed to place
    and paint some bleeds; `ventricles=False` leaves it zero and saves a third of the work.
    """
    shape = ras.shape[:-1]
    ras = ras.reshape(-1, 3)
    coords = (ras - template.origin).T
    if depth is None:
        depth = _sample(template.depth, coords / COARSE_MM, OUTSIDE_DEPTH_MM)
    depth = np.asarray(depth, np.float32).reshape(-1)
    # Tissue maps only where there is intracranial content (half the points or less).
    inside = np.flatnonzero(depth <= head.csf_rim_mm + 1.0)
    coords = coords[:, inside]
    gm, wm, vent = (np.zeros(len(depth), np.float32) for _ in range(3))
    gm[inside] = _sample(template.gm, coords, 0.0)
    wm[inside] = _sample(template.wm, coords, 0.0)
    if ventricles:
        vent[inside] = _sample(template.ventricles, coords / COARSE_MM, 0.0)
    gm, wm = _atrophy(gm, wm, head.atrophy)
    intracranial = depth <= head.csf_rim_mm
    csf = np.where(intracranial, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0)
    fields = (gm, wm, csf.astype(np.float32), depth, vent, ras[:, 0])
    return Fields(*(a.reshape(shape) for a in fields))


def _sample(volume: np.ndarray, coords: np.ndarray, outside: float) -> np.ndarray:
    """Trilinear interpolation at voxel coordinates (3, n); `outside` beyond the grid."""
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=outside)


def _atrophy(gm: np.ndarray, wm: np.ndarray, atrophy: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut and re-stretch tissue probability: thin tissue turns to CSF, boundaries sharpen.

    A template is an average of many brains, so its sulci are blurred; even with no
    atrophy a mild contrast stretch makes them look like one person's sulci.
    """
    tissue = gm + wm
    low = 0.12 + atrophy
    high = 0.85
    stretched = np.clip((tissue - low) / (high - low), 0.0, 1.0)
    share = np.divide(gm, tissue, out=np.zeros_like(gm), where=tissue > 1e-3)
    return stretched * share, stretched * (1.0 - share)


def skull_modulation(head: Head, ras: np.ndarray) -> np.ndarray:
    """A smooth factor around 1 so skull thickness varies over the head (thicker in places)."""
    k = head.warp_k[0] * 0.8
    return 1.0 + 0.2 * np.sin(ras @ k + head.warp_phase[-1])


# Below this template z (mm) the head does not end under the brain: its outline at this
# level continues downwards (narrowing by BASE_TAPER mm per mm), filled with the face,
# the skull base and the neck (see mimics.py).
BASE_Z = -12.0
BASE_TAPER = 0.25
# Under this template z the side walls are soft tissue (muscles, parotid), not skull.
SKULL_WALL_BOTTOM_Z = -42.0
SOFT_TISSUE_HU = 45.0


def compose_hu(
    fields: Fields,
    head: Head,
    skull_modulation: np.ndarray,
    base_depth: np.ndarray | None = None,
    z: np.ndarray | None = None,
) -> np.ndarray:
    """Hounsfield units at the sampled points: brain, CSF, skull tables, diploe, scalp, air.

    `skull_modulation` (same shape, around 1) lets the skull be thicker in some places.
    `base_depth` (the envelope depth sampled at template z = BASE_Z) and `z` (template
    z) extend the head below the brain: without them the skull closes under the
    temporal lobes and the face is air.
    """
    tissue = fields.gm * head.gm_hu + fields.wm * head.wm_hu + fields.csf * head.csf_hu
    skull = head.skull_mm * skull_modulation
    u = (fields.depth - head.csf_rim_mm) / skull  # 0..1 = skull
    outer = _outer_profile(u, head, skull)
    if base_depth is not None and z is not None:
        below = np.flatnonzero((z < BASE_Z) & (u > 1.0))  # under the brain, past its skull
        z, skull_b = z.reshape(-1)[below], np.broadcast_to(skull, u.shape).reshape(-1)[below]
        outline = np.broadcast_to(base_depth, u.shape).reshape(-1)[below] + BASE_TAPER * (
            BASE_Z - z
        )
        u_base = (np.minimum(fields.depth.reshape(-1)[below], outline) - head.csf_rim_mm) / skull_b
        base = _outer_profile(u_base, head, skull_b)
        soft = (u_base <= 0.0) | ((u_base <= 1.0) & (z < SKULL_WALL_BOTTOM_Z))
        outer.reshape(-1)[below] = np.where(soft, SOFT_TISSUE_HU, base)
    return np.where(fields.depth <= head.csf_rim_mm, tissue, outer).astype(np.float32)


def _outer_profile(u: np.ndarray, head: Head, skull: np.ndarray) -> np.ndarray:
    """HU along the normalised distance u outside the inner table: tables, diploe, scalp, air."""
    scalp_end = 1.0 + head.scalp_mm / skull
    profile_u = [0.0, 0.05, 0.25, 0.4, 0.6, 0.75, 0.95, 1.0, 1.1]
    profile_hu = [
        head.csf_hu,
        head.bone_hu,
        head.bone_hu,
        head.diploe_hu,
        head.diploe_hu,
        head.bone_hu,
        head.bone_hu,
        head.scalp_hu,
        head.scalp_hu,
    ]
    outer = np.interp(u, profile_u, profile_hu)
    in_scalp = u > 1.0
    fat = in_scalp & (u > 1.0 + 0.3 * (scalp_end - 1.0)) & (u < 1.0 + 0.5 * (scalp_end - 1.0))
    outer = np.where(fat, -40.0, outer)
    return np.where(u > scalp_end, -1000.0, outer)
