"""Render one synthetic series: a patient's head, their bleeds, sliced into 5 mm CT slabs.

The expensive part is sampling the template at every sub-plane point; the mapping from
patient to template coordinates is smooth, so it is computed on a coarse grid and
upsampled, and the tissue maps are then sampled once per full-resolution point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ichinpaint.constants import MIMIC_CODES, MIMIC_KINDS, SUBTYPE_CODES

from . import anatomy, geometry, lesions
from . import mimics as mimics_mod
from .anatomy import HEAD_CENTRE_MNI, Head, Template
from .geometry import SUBPLANES, SeriesGeometry

# Fraction of a slab a bleed must fill at a pixel to count as lesion there: below it
# the contrast is too faint for any reader, so the labels follow what is visible.
LESION_FRACTION = 0.5
COARSE_STRIDE = 4
SEED_STRIDE = 8


@dataclass
class RenderedSeries:
    """A series in slice order k: HU (float32), lesion, mimic and intracranial masks (uint8)."""

    geometry: SeriesGeometry
    hu: np.ndarray  # (n, rows, cols)
    lesion: np.ndarray  # (n, rows, cols), 0 none, 1..5 SUBTYPES
    brain: np.ndarray  # (n, rows, cols), 0/1
    lesions: list[lesions.Lesion]
    head: Head
    mimic: np.ndarray | None = None  # (n, rows, cols), 0 none, MIMIC_CODES
    mimics: mimics_mod.PatientMimics | None = None


# A mimic labels a pixel when it fills this share of the slab (2 of 5 sub-planes); thin
# dural sheets need only one sub-plane (an oblique 1-mm sheet fills no more of a 5-mm
# slab). Skull base: intracranial space and bone each fill at least SKULL_BASE_SHARE.
MIMIC_FRACTION = 0.4
SHEET_FRACTION = 0.2
SKULL_BASE_SHARE = 0.2
SKULL_BASE_MAX_Z = 0.0  # template z (mm): above it mixed bone is the vault, not the base
BONE_HU = 300.0
STREAK_LABEL_HU = 6.0  # beam-hardening labels where the streaks move HU at least this much
SHEETS = ("falx", "tentorium")
# Template z (mm) below which a stack does not reach (about the atlas): a long stack of
# a small head then ends above the vertex, as real series with a slice of air do.
LOWEST_MNI_Z = -72.0


def stack_top_mni_z(n_slices: int, scale_z: float, vertex_z: float) -> float:
    """Template z of the top of the stack.

    Short stacks (the tiny test sets) are centred on the supratentorial brain; long ones
    (20-40 slices, as real series) end at the vertex and reach down to the skull base.
    """
    half = n_slices * geometry.SLAB_MM / 2 / scale_z
    return max(min(20.0 + half, vertex_z), LOWEST_MNI_Z + 2 * half)


def render_series(
    template: Template,
    rng: np.random.Generator,
    n_slices: int,
    rows: int,
    cols: int,
    lesion_kinds: list[str],
    tilt_deg: float = 0.0,
    mimic_kinds: list[str] | None = None,
    healthy_twin: bool = False,
) -> RenderedSeries:
    """Draw a head and its mimics, place the requested bleeds (where anatomy allows), slice it.

    `healthy_twin`: the same head, geometry and mimics (the random draws are the same),
    with its bleeds placed but not painted and without noise. That is the perfect healthy
    re-painting, which no model can beat (benchmarks/healthy_twin.py).
    """
    table_z = float(rng.uniform(-150, 150))
    head = anatomy.random_head(rng, table_z)
    m = mimics_mod.random_mimics(rng, list(mimic_kinds or []), head.csf_hu)
    vertex_z = float(rng.uniform(80, 94))
    top = stack_top_mni_z(n_slices, head.scale[2], vertex_z)
    half = n_slices * geometry.SLAB_MM / 2
    centre_z = table_z + (top - HEAD_CENTRE_MNI[2]) * head.scale[2] - half
    geom = geometry.axial_geometry(
        rng,
        n_slices,
        rows,
        cols,
        centre_z + rng.uniform(-5, 5),
        tilt_deg=tilt_deg,
        min_fov_mm=2 * (anatomy.head_radius_mm(head) + np.linalg.norm(head.centre_lps[:2]) + 8),
    )
    placed = _place_lesions(template, head, geom, lesion_kinds, rng)
    shape = (n_slices, rows, cols)
    hu = np.empty(shape, np.float32)
    codes = np.zeros(shape, np.uint8)
    brain = np.zeros(shape, np.uint8)
    mimic = np.zeros(shape, np.uint8)
    spacing = float(np.mean(geom.pixel_spacing))
    painted = [] if healthy_twin else placed
    for k in range(n_slices):
        slab = _render_slice(template, head, m, geom, k, painted)
        codes[k], brain[k], mimic[k] = slab.codes, slab.brain, slab.mimic
        # The reconstruction kernel blurs every edge (the inner-table rim among them).
        hu[k] = ndimage.gaussian_filter(slab.hu, head.psf_mm / spacing)
        if slab.streaks is not None:
            hu[k] += slab.streaks
        if not healthy_twin:
            hu[k] += _noise(rng, (rows, cols), head.noise_hu, head.noise_cutoff * spacing)
    return RenderedSeries(geom, hu, codes, brain, placed, head, mimic, m)


def _template_points(
    template: Template, head: Head, geom: SeriesGeometry, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, mimics_mod.PointIndex]:
    """Template RAS (SUBPLANES, rows, cols, 3), envelope depth, skull-thickness factor and
    the depth of the head outline below the brain (anatomy.BASE_Z) of slice k's pixels,
    and an index that finds the points near a template-space box.

    All are smooth, so they are computed on a coarse grid and upsampled bilinearly. Over
    the 5 mm of a slab the template coordinates are linear to well under 0.1 mm (the
    deformation's wavelengths are 60 mm and more), so only the outer sub-planes are
    upsampled and the inner ones interpolated; depth is upsampled per sub-plane (the
    skull at the vertex is cut obliquely, and that is what depth draws).
    """
    coarse = anatomy.template_coordinates(head, geom.points(k, stride=COARSE_STRIDE))
    depth = anatomy.sample_depth(template, coarse)
    middle = coarse[SUBPLANES // 2]
    modulation = anatomy.skull_modulation(head, middle)
    capped = middle.copy()
    capped[..., 2] = np.maximum(capped[..., 2], anatomy.BASE_Z)
    base_depth = anatomy.sample_depth(template, capped)
    ends = np.moveaxis(coarse[[0, -1]], -1, 1).reshape(-1, *coarse.shape[1:3])  # (6, r', c')
    stacked = np.concatenate([ends, depth, modulation[None], base_depth[None]])
    full = geometry.upsample(stacked.astype(np.float32), geom.rows, geom.cols)
    first, last = np.moveaxis(full[:3], 0, -1), np.moveaxis(full[3:6], 0, -1)
    t = np.linspace(0.0, 1.0, SUBPLANES, dtype=np.float32)[:, None, None, None]
    ras = first[None] + t * (last - first)[None]
    n = 6 + SUBPLANES
    index = mimics_mod.PointIndex(
        coarse, geom.rows, geom.cols, COARSE_STRIDE * max(geom.pixel_spacing) / head.scale.min()
    )
    return ras, full[6:n], full[n], full[n + 1], index


@dataclass
class Slab:
    """One rendered slice before blur and noise."""

    hu: np.ndarray
    codes: np.ndarray
    brain: np.ndarray
    mimic: np.ndarray
    streaks: np.ndarray | None


def _render_slice(
    template: Template,
    head: Head,
    m: mimics_mod.PatientMimics,
    geom: SeriesGeometry,
    k: int,
    placed: list[lesions.Lesion],
) -> Slab:
    ras, depth, modulation, base_depth, index = _template_points(template, head, geom, k)
    nearby = [x for x in placed if x.near_plane(geom.ipps[k], geom.normal, geometry.SLAB_MM)]
    need_ventricles = any(x.kind in lesions.USES_VENTRICLES for x in nearby)
    fields = anatomy.sample_fields(template, head, ras, depth, ventricles=need_ventricles)
    hu = anatomy.compose_hu(fields, head, modulation, base_depth, ras[..., 2])
    flat_hu, flat_ras = hu.reshape(-1), ras.reshape(-1, 3)
    inside_mm = head.csf_rim_mm - fields.depth.reshape(-1)
    intracranial = inside_mm >= 0
    flat_hu += np.where(intracranial, head.rim_hu * np.exp(-np.maximum(inside_mm, 0) / 2.0), 0)
    pixel_mm = float(np.mean(geom.pixel_spacing)) / float(np.mean(head.scale))
    tissue = (fields.gm + fields.wm).reshape(-1)
    kind = mimics_mod.paint_intracranial(
        m, flat_hu, flat_ras, index, inside_mm, tissue, 0.55 * pixel_mm
    )
    intrusion, petrous = mimics_mod.paint_skull_base(m, flat_hu, flat_ras, index, intracranial)
    kind[intrusion] = 0
    if nearby:
        hu, masks = lesions.paint(nearby, hu, geom.points(k), fields, head)
    else:
        masks = {}
    planes = (SUBPLANES, geom.rows, geom.cols)
    codes = _lesion_codes(masks, (geom.rows, geom.cols))
    kind = kind.reshape(planes)
    for mask in masks.values():
        kind[mask] = 0  # a bleed painted over a mimic: lesion wins
    space = (intracranial & ~intrusion).reshape(planes).mean(0)
    brain = space >= 0.5
    codes[~brain] = 0  # a slab more bone than intracranial space shows no readable bleed
    mimic = _mimic_codes(kind)
    bone = (hu >= BONE_HU).mean(0)
    lower = ras[..., 2].mean(0) < SKULL_BASE_MAX_Z
    base = lower & (space >= SKULL_BASE_SHARE) & (bone >= SKULL_BASE_SHARE)
    mimic[base & (mimic == 0)] = MIMIC_CODES["skull_base"]
    spacing = float(np.mean(geom.pixel_spacing))
    streaks = mimics_mod.streaks(m, petrous.reshape(planes).mean(0), spacing)
    if streaks is not None:
        streaky = (np.abs(streaks) >= STREAK_LABEL_HU) & brain & (mimic == 0)
        mimic[streaky] = MIMIC_CODES["beam_hardening"]
    mimic[codes > 0] = 0
    return Slab(hu.mean(0), codes, brain.astype(np.uint8), mimic, streaks)


def _lesion_codes(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Subtype code per pixel: the bleed that fills the largest share of the slab (>= LESION_FRACTION)."""
    codes = np.zeros(shape, np.uint8)
    best = np.full(shape, LESION_FRACTION - 1e-6, np.float32)
    for kind in masks:
        fraction = masks[kind].mean(0)
        better = fraction > best
        codes[better] = SUBTYPE_CODES[kind]
        best = np.maximum(best, fraction)
    return codes


def _mimic_codes(kind: np.ndarray) -> np.ndarray:
    """Mimic code per pixel from the per-sub-plane codes (rule: MIMIC_FRACTION, SHEET_FRACTION)."""
    out = np.zeros(kind.shape[1:], np.uint8)
    best = np.zeros(kind.shape[1:], np.float32)
    for code in np.unique(kind):
        if code == 0:
            continue
        share = (kind == code).mean(0)
        name = MIMIC_KINDS[code - 1]
        need = SHEET_FRACTION if name in SHEETS else MIMIC_FRACTION
        better = (share >= need - 1e-6) & (share > best)
        out[better] = code
        best = np.maximum(best, np.where(better, share, best))
    return out


def _noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, cutoff: float
) -> np.ndarray:
    """CT quantum noise of standard deviation `sigma` HU with a filtered-backprojection texture.

    White noise shaped by a ramp times an apodising window in frequency (the noise power
    spectrum of FBP rises with frequency, then the kernel rolls it off at `cutoff`
    cycles/pixel): grainy but correlated, not white, like real CT noise.
    """
    white = rng.standard_normal(shape).astype(np.float32)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fx**2 + fy**2)
    window = np.where(f < cutoff, 0.5 * (1 + np.cos(np.pi * np.minimum(f / cutoff, 1.0))), 0.0)
    shaped = np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(f) * window, s=shape).astype(np.float32)
    return shaped * (sigma / max(float(shaped.std()), 1e-6))


def _place_lesions(
    template: Template,
    head: Head,
    geom: SeriesGeometry,
    kinds: list[str],
    rng: np.random.Generator,
) -> list[lesions.Lesion]:
    """One lesion per requested kind, started at a random anatomically valid point."""
    seeds = _seed_points(template, head, geom)
    placed = []
    for kind in kinds:
        options = lesions.candidates(kind, seeds, head, geom.n_slices)
        if len(options) == 0:
            continue
        typical = lesions.preferred(kind, seeds, options)
        if len(typical) and rng.random() < 0.6:
            options = typical
        i = int(rng.choice(options))
        placed.append(lesions.random_lesion(kind, seeds.points[i], float(seeds.fields.lr[i]), rng))
    return placed


def _seed_points(template: Template, head: Head, geom: SeriesGeometry) -> lesions.SeedPoints:
    """The centre plane of every slice on a coarse grid, with its tissue."""
    points, index = [], []
    for k in range(geom.n_slices):
        p = geom.points(k, stride=SEED_STRIDE)[SUBPLANES // 2].reshape(-1, 3)
        points.append(p)
        index.append(np.full(len(p), k))
    points = np.concatenate(points)
    ras = anatomy.template_coordinates(head, points)
    return lesions.SeedPoints(
        points, np.concatenate(index), anatomy.sample_fields(template, head, ras), ras
    )
