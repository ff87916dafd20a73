"""Overlay pictures of detections, for people: CT, anomaly colour map, outlines.

Each PNG shows the slice twice side by side: the CT in the brain window alone,
then the same CT with the anomaly map as a colour overlay, the post-processed
detections outlined in cyan and the ground truth (where it exists) in red.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ichinpaint import manifest  # noqa: E402
from ichinpaint.constants import SUBTYPES  # noqa: E402
from ichinpaint.io import atomic_dir, atomic_path  # noqa: E402

if TYPE_CHECKING:
    from ichinpaint.evaluation.series import SeriesArrays

DETECTION_COLOUR = "cyan"
TRUTH_COLOUR = "red"


def select_examples(slices: pd.DataFrame, per_category: int) -> pd.DataFrame:
    """Rows worth looking at, with a ``category`` column.

    `slices` needs ``predicted`` (bool), ``score``, ``any`` and the subtype columns.
    Categories: ``tp_<subtype>`` (detected bleeds of that subtype, highest score
    first), ``fn`` (missed bleeds, highest score first: the near misses) and ``fp``
    (healthy slices called positive, highest score first: the worst alarms).
    """
    chosen = []
    ranked = slices.sort_values("score", ascending=False, kind="stable")
    positive = ranked["any"].astype(int) == 1
    for subtype in SUBTYPES:
        hits = ranked[positive & ranked["predicted"] & (ranked[subtype].astype(int) == 1)]
        chosen.append(hits.head(per_category).assign(category=f"tp_{subtype}"))
    chosen.append(ranked[positive & ~ranked["predicted"]].head(per_category).assign(category="fn"))
    chosen.append(ranked[~positive & ranked["predicted"]].head(per_category).assign(category="fp"))
    return pd.concat(chosen, ignore_index=True)


def _outline(ax: plt.Axes, mask: np.ndarray | None, colour: str, width: float, style: str) -> None:
    if mask is not None and np.asarray(mask).any():
        ax.contour(
            np.asarray(mask, dtype=float),
            levels=[0.5],
            colors=colour,
            linewidths=width,
            linestyles=style,
        )


def render_overlay(
    path: str | Path,
    ct: np.ndarray,
    anomaly: np.ndarray,
    detections: np.ndarray,
    truth: np.ndarray | None,
    *,
    title: str,
    vmax: float,
) -> None:
    """Write one overlay PNG (atomically). `vmax`: anomaly value shown at full colour."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4), dpi=120)
    for ax in axes:
        ax.imshow(ct, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
    shown = np.ma.masked_less_equal(np.asarray(anomaly, dtype=float), 0.0)
    image = axes[1].imshow(shown, cmap="inferno", vmin=0, vmax=max(vmax, 1e-6), alpha=0.6)
    # Detections wide and solid, truth thin and dashed: both stay visible where they agree.
    _outline(axes[1], detections > 0, DETECTION_COLOUR, 1.8, "solid")
    _outline(axes[1], truth, TRUTH_COLOUR, 0.9, "dashed")
    fig.colorbar(image, ax=axes[1], fraction=0.046, pad=0.04, label="anomaly (x 80 HU)")
    axes[0].set_title("CT (brain window)", fontsize=8)
    axes[1].set_title("anomaly, detections (cyan), truth (red, dashed)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(
        left=0.01, right=0.9, bottom=0.02, top=0.84, wspace=0.05
    )  # fixed: tight_layout is slow
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def render_message(path: str | Path, message: str) -> None:
    """A PNG that says why there is nothing to show (the gallery folder is never empty)."""
    fig = plt.figure(figsize=(4, 1.2), dpi=100)
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_gallery(
    out_dir: Path,
    test: pd.DataFrame,
    arrays: dict[str, SeriesArrays],
    *,
    root: Path,
    per_category: int,
    pixel_threshold: float,
) -> None:
    """Overlay PNGs of the chosen examples; one explanatory PNG when there are none.

    `test`: the test slice table (``predicted``, ``score``, labels, ``image_path``);
    `arrays`: each series' post-processed slices as evaluation kept them (the gallery's
    candidates), so nothing is computed again here.
    """
    examples = select_examples(test[test["use"]], per_category)
    vmax = max(2.0 * pixel_threshold, 0.05)
    with atomic_dir(out_dir) as tmp:
        if examples.empty:
            render_message(tmp / "no_examples.png", "no detections or bleeds to show")
            return
        for row in examples.itertuples():
            held = arrays[row.series_uid]
            n = held.index(row.image_id)
            render_overlay(
                tmp / f"{row.category}_{row.image_id}.png",
                manifest.read_png(root / row.image_path),
                held.cleaned[n],
                held.labels[n],
                None if held.truth is None else held.truth[n],
                title=f"{row.category}  {row.image_id}  score {row.score:.3g}",
                vmax=vmax,
            )
