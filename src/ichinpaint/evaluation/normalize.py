"""Location-dependent normalisation of anomaly maps, learned from healthy validation series.

Re-painting is harder in some healthy places than in others: next to the inner table
(partial volume of bone, extra-axial CSF, venous sinuses) and on the small brain
sections of vertex and skull-base slices. A single pixel threshold then fires there
first, on every healthy series. The normaliser learns, on healthy validation maps only,
how large the anomaly values typically get in each kind of place, and divides by it:

- depth: distance (model pixels) from the brain mask's edge, in bins 1, 2, 3, >= 4;
- level: the slice's brain area as a share of the largest brain section of its series,
  in bins < 0.35 (vertex, skull base), 0.35-0.7, >= 0.7 (mid-brain).

The scale of a cell is a high percentile of its healthy values; a cell with too few
validation pixels borrows the scale of its depth bin over all levels, and failing that
the pooled one. A bleed raises values far above the healthy spread of its cell wherever
it lies, so extra-axial blood next to the table stays detectable (an erosion of the
mask would erase it instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MODES: tuple[str, ...] = ("none", "location")
DEPTH_EDGES: tuple[int, ...] = (1, 2, 3, 4)  # bin i holds depth == edge i; the last is >=
LEVEL_EDGES: tuple[float, ...] = (0.35, 0.7)
SCALE_PERCENTILE = 99.0
MIN_CELL_PIXELS = 200
# Scales never go below this (window units, 0.8 HU): a perfectly quiet cell would
# otherwise turn numerical noise into detections.
MIN_SCALE = 0.01


def pixel_depth(brain: np.ndarray) -> np.ndarray:
    """Distance in pixels from each brain pixel to the nearest non-brain pixel (0 outside)."""
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        return np.zeros(brain.shape, np.float32)
    return ndimage.distance_transform_edt(np.pad(brain, 1))[1:-1, 1:-1].astype(np.float32)


def slice_levels(brains: np.ndarray) -> np.ndarray:
    """Per slice of a ``[k, row, col]`` series: brain area / the series' largest brain area."""
    areas = np.asarray(brains, dtype=bool).reshape(len(brains), -1).sum(axis=1).astype(float)
    top = areas.max() if len(areas) else 0.0
    return areas / top if top > 0 else np.zeros_like(areas)


def cell_index(brains: np.ndarray) -> np.ndarray:
    """Cell id per pixel of a ``[k, row, col]`` series (-1 outside the brain)."""
    brains = np.asarray(brains, dtype=bool)
    levels = np.digitize(slice_levels(brains), LEVEL_EDGES)  # 0..len(LEVEL_EDGES)
    cells = np.full(brains.shape, -1, np.int16)
    for k, brain in enumerate(brains):
        depth = np.digitize(pixel_depth(brain), DEPTH_EDGES[1:])  # 0..len(DEPTH_EDGES)-1
        cells[k][brain] = (levels[k] * len(DEPTH_EDGES) + depth[brain]).astype(np.int16)
    return cells


N_CELLS = len(DEPTH_EDGES) * (len(LEVEL_EDGES) + 1)


@dataclass(frozen=True)
class Normalizer:
    """Scale per cell (window units); `apply` divides a series' maps by their cells' scales."""

    mode: str
    scales: tuple[float, ...] = ()

    def apply(self, maps: np.ndarray, brains: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return np.asarray(maps)
        cells = cell_index(brains)
        lookup = np.asarray(self.scales, dtype=np.float64)
        out = np.zeros(np.shape(maps), np.float64)
        inside = cells >= 0
        out[inside] = np.asarray(maps, dtype=np.float64)[inside] / lookup[cells[inside]]
        return out.astype(np.float32)

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "scales": list(self.scales),
            "depth_edges": list(DEPTH_EDGES),
            "level_edges": list(LEVEL_EDGES),
            "scale_percentile": SCALE_PERCENTILE,
        }

    @classmethod
    def from_json(cls, data: dict) -> Normalizer:
        if data.get("mode", "none") != "none" and (
            list(data.get("depth_edges", [])) != list(DEPTH_EDGES)
            or list(data.get("level_edges", [])) != list(LEVEL_EDGES)
        ):
            raise ValueError("normaliser was fitted with other cell edges than this version's")
        return cls(mode=data.get("mode", "none"), scales=tuple(data.get("scales", ())))


def fit_normalizer(mode: str, values: np.ndarray, cells: np.ndarray) -> Normalizer:
    """Learn the scales from pooled healthy validation values and their cell ids."""
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {MODES}")
    if mode == "none":
        return Normalizer("none")
    values = np.asarray(values, dtype=np.float64)
    cells = np.asarray(cells)
    if values.size == 0:
        raise ValueError("location normalisation needs healthy validation pixels")
    pooled = max(float(np.percentile(values, SCALE_PERCENTILE)), MIN_SCALE)
    n_depth = len(DEPTH_EDGES)
    depth_of = cells % n_depth
    scales = []
    for cell in range(N_CELLS):
        here = values[cells == cell]
        if here.size < MIN_CELL_PIXELS:
            here = values[depth_of == cell % n_depth]
        scale = (
            float(np.percentile(here, SCALE_PERCENTILE)) if here.size >= MIN_CELL_PIXELS else pooled
        )
        scales.append(max(scale, MIN_SCALE))
    return Normalizer("location", tuple(scales))
