"""A contact sheet of synthetic slices, so a person can judge realism at a glance.

Brain window (center 40, width 80). First row: one panel per subtype (its largest
example), lesion outlines coloured by subtype. Then one healthy slice per mimic kind
(the slice where that structure is largest), its label outlined, so the healthy
look-alikes can be judged beside the bleeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ichinpaint import io
from ichinpaint.constants import (
    BRAIN_WINDOW_CENTER,
    BRAIN_WINDOW_WIDTH,
    MIMIC_CODES,
    MIMIC_KINDS,
    SUBTYPE_CODES,
    SUBTYPES,
)

SUBTYPE_COLOURS = {
    "epidural": "#ff3b30",
    "intraparenchymal": "#ffcc00",
    "intraventricular": "#34c759",
    "subarachnoid": "#00c7ff",
    "subdural": "#ff2dff",
}
MIMIC_COLOUR = "#ff9500"
N_COLS = 5


@dataclass
class Panel:
    """One candidate slice: its HU image, lesion codes and why it was picked."""

    title: str
    kind: str  # a subtype, "healthy", or a mimic kind (MIMIC_KINDS) on a healthy slice
    area: int  # lesion (or mimic) pixels of `kind` (0 for plain healthy)
    hu: np.ndarray
    codes: np.ndarray
    mimic: np.ndarray | None = None  # the outlined mimic's pixels (mimic panels)


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
        panels += _mimic_panels(plan, series, kept)
    return panels


def _mimic_panels(plan, series, kept: list[int]) -> list[Panel]:
    """A healthy series' largest example of each mimic kind it shows."""
    if series.mimic is None:
        return []
    panels = []
    for kind in MIMIC_KINDS:
        mask = series.mimic[kept] == MIMIC_CODES[kind]
        areas = mask.sum((1, 2))
        if areas.max(initial=0) == 0:
            continue
        i = int(np.argmax(areas))
        k = kept[i]
        title = f"{kind} ({plan.series_uid}, k={k})"
        panels.append(Panel(title, kind, int(areas[i]), series.hu[k], series.lesion[k], mask[i]))
    return panels


def choose(panels: list[Panel], n_healthy: int = 0) -> list[Panel]:
    """The largest example of each subtype, then of each mimic kind (healthy slices)."""
    chosen = [p for p in panels if p.kind == "healthy"][:n_healthy]
    for kind in SUBTYPES + MIMIC_KINDS:
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
    bleeds = [p for p in chosen if p.kind in SUBTYPES]
    others = [p for p in chosen if p.kind not in SUBTYPES]
    # Bleeds fill the first row(s), mimics start on a row of their own.
    slots = bleeds + [None] * (-len(bleeds) % N_COLS) + others
    n_rows = max(1, -(-len(slots) // N_COLS))
    fig, axes = plt.subplots(
        n_rows, N_COLS, figsize=(3.2 * N_COLS, 3.5 * n_rows + 0.8), squeeze=False
    )
    low = BRAIN_WINDOW_CENTER - BRAIN_WINDOW_WIDTH / 2
    high = BRAIN_WINDOW_CENTER + BRAIN_WINDOW_WIDTH / 2
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, slots, strict=False):
        if panel is None:
            continue
        ax.imshow(panel.hu, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        for kind in SUBTYPES:
            mask = panel.codes == SUBTYPE_CODES[kind]
            if mask.any():
                ax.contour(
                    mask.astype(float), levels=[0.5], colors=[SUBTYPE_COLOURS[kind]], linewidths=1.0
                )
        if panel.mimic is not None and panel.mimic.any():
            ax.contour(
                panel.mimic.astype(float), levels=[0.5], colors=[MIMIC_COLOUR], linewidths=0.6
            )
        ax.set_title(panel.title, fontsize=8, pad=3)
    handles = [Patch(edgecolor=c, facecolor="none", label=k) for k, c in SUBTYPE_COLOURS.items()]
    handles.append(Patch(edgecolor=MIMIC_COLOUR, facecolor="none", label="healthy mimic (title)"))
    fig.legend(handles=handles, loc="lower center", ncol=6, frameon=False, fontsize=10)
    fig.suptitle(
        "Synthetic head CT, brain window (40/80 HU): bleeds by subtype (first row), "
        "healthy look-alikes (mimics, below)"
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.06, wspace=0.04, hspace=0.12)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, metadata={"Software": None})
    plt.close(fig)
