"""The overlay PNGs of the detect stage: CT, anomaly map and both together.

Only a few slices are drawn (the highest-scoring with and without a bleed), picked
while the score rows stream past, so any number of series costs a few rows of memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ichinpaint.constants import LABELS


def save_overlay(
    path: Path,
    ct: np.ndarray,
    anomaly: np.ndarray,
    title: str,
    vmax: float = 0.5,
    show_above: float = 0.1,
) -> None:
    """CT, map, and the map over the CT side by side: what a reviewer looks at first.

    The overlay panel shows the map only above `show_above` (0.1 = 8 HU) so that the CT
    stays readable under it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct01 = (np.asarray(ct) + 1) / 2
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9), constrained_layout=True)
    axes[0].imshow(ct01, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("CT (brain window)")
    shown = axes[1].imshow(anomaly, cmap="magma", vmin=0, vmax=vmax)
    axes[1].set_title("anomaly map")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="|diff| (1 = 80 HU)")
    axes[2].imshow(ct01, cmap="gray", vmin=0, vmax=1)
    axes[2].imshow(
        np.ma.masked_less(anomaly, show_above), cmap="magma", vmin=0, vmax=vmax, alpha=0.7
    )
    axes[2].set_title(f"overlay (> {show_above * 80:g} HU)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)


class OverlayPicker:
    """Keeps the highest-scoring slices with and without a bleed, to draw at the end.

    Only `per_group` score rows per group are held, and the images are loaded only for
    the picked ones when they are drawn, so this works for any number of series.
    """

    def __init__(self, per_group: int, score: str = "score_top1pct") -> None:
        self.per_group = per_group
        self.score = score
        self._heaps: dict[str, list[tuple[float, int, dict[str, Any]]]] = {
            "bleed": [],
            "healthy": [],
        }
        self._counter = 0

    def offer(self, row: dict[str, Any]) -> None:
        if self.per_group <= 0:
            return
        heap = self._heaps["bleed" if int(row["any"]) else "healthy"]
        entry = (float(row[self.score]), self._counter, row)
        self._counter += 1
        if len(heap) < self.per_group:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def write(
        self, out_dir: Path, load: Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]
    ) -> list[Path]:
        """Draw the picks; `load(row)` gives the slice's CT (model scale) and its map."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for group, heap in self._heaps.items():
            for rank, (_, _, row) in enumerate(sorted(heap, key=lambda e: -e[0])):
                labels = [name for name in LABELS[:-1] if int(row[name])] or ["healthy"]
                title = (
                    f"{group} #{rank + 1}: {row['image_id']} ({row['series_uid']}, k={row['slice_index']})"
                    f" - {', '.join(labels)} - {self.score} {row[self.score]:.3f}"
                )
                path = out_dir / f"{group}_{rank + 1:02d}_{row['image_id']}.png"
                ct, anomaly = load(row)
                save_overlay(path, ct, anomaly, title)
                written.append(path)
        return written
