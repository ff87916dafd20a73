"""A contact sheet of synthetic slices, so a person can judge realism at a glance.

Brain window (center 40, width 80), lesion outlines coloured by subtype, one panel
per subtype (its largest example) plus healthy slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichinpaint import io
from ichinpaint.constants import BRAIN_WINDOW_CENTER, BRAIN_WINDOW_WIDTH, SUBTYPE_CODES, SUBTYPES

SUBTYPE_COLOURS = {
    "epidural": "#ff3b30",
    "intraparenchymal": "#ffcc00",
    "intraventricular": "#34c759",
    "subarachnoid": "#00c7ff",
    "subdural": "#ff2dff",
}


@dataclass
class Panel:
    """One candidate slice: its HU image, lesion codes and why it was picked."""

    title: str
    kind: str  # a subtype, or "healthy"
    area: int  # lesion pixels of `kind` (0 for healthy)
    hu: np.ndarray
    codes: np.ndarray


def pick_panels(plan, series, kept: list[int]) -> list[Panel]:
    """The best slice of each subtype this series has, or its middle slice if it is healthy."""
    panels = []
    # Edge slices are the least typical (skull base, vertex): show them only if nothing else.
    inner = kept[1:-1] if len(kept) >= 3 else kept
    for kind in SUBTYPES:
        areas = [(int((series.lesion[k] == SUBTYPE_CODES[kind]).sum()), k) for k in inner]
        area, k = max(areas) if areas else (0, 0)
        if area > 0:
            title = f"{kind} ({plan.series_uid}, k={k})"
            panels.append(Panel(title, kind, area, series.hu[k], series.lesion[k]))
    if not plan.lesion_kinds and kept:
        k = kept[len(kept) // 2]
        panels.append(
            Panel(
                f"healthy ({plan.series_uid}, k={k})", "healthy", 0, series.hu[k], series.lesion[k]
            )
        )
    return panels


def choose(panels: list[Panel], n_healthy: int = 3) -> list[Panel]:
    """A few healthy slices, then the largest example of each subtype."""
    chosen = [p for p in panels if p.kind == "healthy"][:n_healthy]
    for kind in SUBTYPES:
        examples = [p for p in panels if p.kind == kind]
        if examples:
            chosen.append(max(examples, key=lambda p: p.area))
    return chosen


def write(path: Path, panels: list[Panel]) -> None:
    """Render the chosen panels into one PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    chosen = choose(panels)
    n_cols = 4
    n_rows = max(1, -(-len(chosen) // n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.6 * n_cols, 4.0 * n_rows + 0.8), squeeze=False
    )
    low = BRAIN_WINDOW_CENTER - BRAIN_WINDOW_WIDTH / 2
    high = BRAIN_WINDOW_CENTER + BRAIN_WINDOW_WIDTH / 2
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, chosen, strict=False):
        ax.imshow(panel.hu, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        for kind in SUBTYPES:
            mask = panel.codes == SUBTYPE_CODES[kind]
            if mask.any():
                ax.contour(
                    mask.astype(float), levels=[0.5], colors=[SUBTYPE_COLOURS[kind]], linewidths=1.0
                )
        ax.set_title(panel.title, fontsize=8, pad=3)
    handles = [Patch(edgecolor=c, facecolor="none", label=k) for k, c in SUBTYPE_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, fontsize=10)
    fig.suptitle("Synthetic head CT, brain window (40/80 HU), lesion outlines by subtype")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.08, wspace=0.04, hspace=0.12)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, metadata={"Software": None})
    plt.close(fig)
