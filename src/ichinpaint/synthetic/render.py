"""Render one synthetic series: a patient's head, their bleeds, sliced into 5 mm CT slabs.

The expensive part is sampling the template at every sub-plane point; the mapping from
patient to template coordinates is smooth, so it is computed on a coarse grid and
upsampled, and the tissue maps are then sampled once per full-resolution point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ichinpaint.constants import SUBTYPE_CODES

from . import anatomy, geometry, lesions
from .anatomy import HEAD_CENTRE_MNI, Head, Template
from .geometry import SUBPLANES, SeriesGeometry

# Fraction of a slab a bleed must fill at a pixel to count as lesion there: below it
# the contrast is too faint for any reader, so the labels follow what is visible.
LESION_FRACTION = 0.5
COARSE_STRIDE = 4
SEED_STRIDE = 8


@dataclass
class RenderedSeries:
    """A series in slice order k: HU (float32), lesion codes and intracranial mask (uint8)."""

    geometry: SeriesGeometry
    hu: np.ndarray  # (n, rows, cols)
    lesion: np.ndarray  # (n, rows, cols), 0 none, 1..5 SUBTYPES
    brain: np.ndarray  # (n, rows, cols), 0/1
    lesions: list[lesions.Lesion]
    head: Head


def stack_centre_mni_z(n_slices: int) -> float:
    """Centre the stack on the supratentorial brain; long stacks stop near the vertex."""
    half = n_slices * geometry.SLAB_MM / 2
    top = min(20.0 + half, 100.0)
    return top - half


def render_series(
    template: Template,
    rng: np.random.Generator,
    n_slices: int,
    rows: int,
    cols: int,
    lesion_kinds: list[str],
    tilt_deg: float = 0.0,
) -> RenderedSeries:
    """Draw a head, place the requested bleeds (where anatomy allows) and slice it."""
    table_z = float(rng.uniform(-150, 150))
    head = anatomy.random_head(rng, table_z)
    centre_z = table_z + (stack_centre_mni_z(n_slices) - HEAD_CENTRE_MNI[2]) * head.scale[2]
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
    for k in range(n_slices):
        hu[k], codes[k], brain[k] = _render_slice(template, head, geom, k, placed)
        hu[k] += _noise(rng, (rows, cols), head.noise_hu)
    return RenderedSeries(geom, hu, codes, brain, placed, head)


def _template_points(
    template: Template, head: Head, geom: SeriesGeometry, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template RAS (SUBPLANES, rows, cols, 3), envelope depth and skull-thickness factor
    of slice k's sub-plane pixels.

    All three are smooth, so they are computed on a coarse grid and upsampled bilinearly.
    """
    coarse = anatomy.template_coordinates(head, geom.points(k, stride=COARSE_STRIDE))
    depth = anatomy.sample_depth(template, coarse)
    modulation = anatomy.skull_modulation(head, coarse)
    stacked = np.concatenate([np.moveaxis(coarse, -1, 0), depth[None], modulation[None]])
    full = geometry.upsample(stacked.astype(np.float32), geom.rows, geom.cols)
    return np.moveaxis(full[:3], 0, -1), full[3], full[4]


def _render_slice(
    template: Template, head: Head, geom: SeriesGeometry, k: int, placed: list[lesions.Lesion]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ras, depth, modulation = _template_points(template, head, geom, k)
    nearby = [x for x in placed if x.near_plane(geom.ipps[k], geom.normal, geometry.SLAB_MM)]
    need_ventricles = any(x.kind in lesions.USES_VENTRICLES for x in nearby)
    fields = anatomy.sample_fields(template, head, ras, depth, ventricles=need_ventricles)
    hu = anatomy.compose_hu(fields, head, modulation)
    if nearby:
        hu, masks = lesions.paint(nearby, hu, geom.points(k), fields, head)
    else:
        masks = {}
    codes = np.zeros((geom.rows, geom.cols), np.uint8)
    best = np.full((geom.rows, geom.cols), LESION_FRACTION - 1e-6, np.float32)
    for kind in masks:
        fraction = masks[kind].mean(0)
        better = fraction > best
        codes[better] = SUBTYPE_CODES[kind]
        best = np.maximum(best, fraction)
    intracranial = (fields.depth <= head.csf_rim_mm).mean(0) >= 0.5
    return hu.mean(0), codes, intracranial.astype(np.uint8)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Slightly correlated Gaussian noise of standard deviation `sigma` HU, like CT quantum noise."""
    white = rng.standard_normal(shape).astype(np.float32)
    smooth = ndimage.gaussian_filter(white, 0.7)
    return smooth * (sigma / max(float(smooth.std()), 1e-6))


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
        points, np.concatenate(index), anatomy.sample_fields(template, head, ras)
    )
