"""Pictures for the review app: the slice composite and the per-slice score strip.

The slice composite is built in numpy (no figure per slider step): the CT in the
brain window, the cleaned anomaly map as an inferno overlay where it is above zero,
detections outlined in cyan and ground truth in red, the same colours as the
evaluate stage's gallery. It is enlarged by pixel repetition so the 64-px model grid
stays readable and outlines stay one screen pixel thick.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import ndimage  # noqa: E402

from ichinpaint.evaluation.gallery import DETECTION_COLOUR, TRUTH_COLOUR  # noqa: E402

_RGB = {"cyan": (0, 255, 255), "red": (255, 40, 40)}
POSITIVE_COLOUR = "#d62728"
FLAGGED_COLOUR = "#17becf"


def display_scale(img_size: int, target_px: int = 640) -> int:
    """Whole-number enlargement that brings the model grid near `target_px` on screen."""
    return max(1, round(target_px / max(img_size, 1)))


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel becomes a `factor` x `factor` block (nearest neighbour)."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner boundary of a binary mask, `width` pixels thick."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def outer_outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The ring of pixels just outside a binary mask, `width` pixels thick."""
    mask = np.asarray(mask, dtype=bool)
    square = np.ones((3, 3), bool)
    return ndimage.binary_dilation(mask, structure=square, iterations=width) & ~mask


def compose_slice(
    ct: np.ndarray,
    anomaly: np.ndarray,
    detections: np.ndarray,
    truth: np.ndarray | None,
    *,
    opacity: float,
    vmax: float,
    scale: int = 8,
) -> np.ndarray:
    """An RGB uint8 picture of one slice, `scale` times larger than the model grid.

    `anomaly` values in [0, vmax] map onto the colour map, blended with an opacity
    proportional to the value (`opacity` at `vmax` and above); zero (outside the
    eroded brain, or nothing there) stays plain CT. `opacity` 0 shows the CT alone.
    """
    gray = np.asarray(ct, dtype=np.float32) / 255.0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    values = np.asarray(anomaly, dtype=np.float32)
    colours = colormaps["inferno"](np.clip(values / max(vmax, 1e-6), 0.0, 1.0))[..., :3]
    # Opacity grows with the value: low-level noise stays faint, the CT readable.
    strength = np.clip(values / max(vmax, 1e-6), 0.0, 1.0)
    alpha = (float(np.clip(opacity, 0.0, 1.0)) * strength)[..., None]
    rgb = (1.0 - alpha) * rgb + alpha * colours
    big = enlarge((rgb * 255).round().astype(np.uint8), scale)
    width = max(1, scale // 5)  # lines stay visible when the picture is shown smaller
    big[outline(enlarge(np.asarray(detections) > 0, scale), width)] = _RGB[DETECTION_COLOUR]
    if truth is not None:
        # Truth is drawn just outside its mask, detections just inside theirs, so a
        # detection that matches the truth shows both lines side by side.
        ring = outer_outline(enlarge(np.asarray(truth, dtype=bool), scale), width)
        big[ring] = _RGB[TRUTH_COLOUR]
    return big


def score_strip(
    table: pd.DataFrame,
    *,
    value_column: str,
    threshold: float,
    threshold_label: str,
    current_slice: int,
) -> bytes:
    """PNG of one value per slice along the series, labelled slices marked.

    Bleed slices (CSV label ``any``) get a red band, flagged slices a filled cyan
    marker, unused slices (mid-range filter) a grey cross; the dashed line is the
    threshold the value is compared with; the dotted blue line is the slice on screen.
    """
    k = table["slice_index"].to_numpy()
    y = table[value_column].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(9, 2.3), dpi=110)
    for index in k[table["any"].to_numpy() == 1]:
        ax.axvspan(index - 0.5, index + 0.5, color=POSITIVE_COLOUR, alpha=0.18, lw=0)
    used = table["use"].to_numpy(dtype=bool)
    flagged = table["predicted"].to_numpy(dtype=bool)
    ax.plot(k[used], y[used], color="0.55", lw=1, zorder=1)
    ax.scatter(
        k[used & ~flagged], y[used & ~flagged], s=22, facecolors="white", edgecolors="0.3",
        zorder=2, label="not flagged",
    )  # fmt: skip
    ax.scatter(
        k[flagged], y[flagged], s=30, color=FLAGGED_COLOUR, edgecolors="0.2", zorder=3,
        label="flagged",
    )  # fmt: skip
    if (~used).any():
        ax.scatter(k[~used], y[~used], marker="x", color="0.6", s=18, zorder=2, label="unused")
    ax.axhline(threshold, color="0.1", ls="--", lw=1, label=threshold_label)
    ax.axvline(current_slice, color="#1f77b4", ls=":", lw=1.5, label="slice on screen")
    ax.plot([], [], color=POSITIVE_COLOUR, alpha=0.4, lw=6, label="bleed (CSV label)")
    ax.set_xlim(k.min() - 0.5, k.max() + 0.5) if len(k) else None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("slice index k")
    ax.set_ylabel(value_column)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
