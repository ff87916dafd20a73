"""ROC and PR curves as the CSV tables `dvc plots show/diff` renders (see dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ichinpaint.evaluation.metrics import pr_points, roc_points
from ichinpaint.io import write_csv

# Columns of each curve table; an undefined curve (one class) is written with its
# header only so the declared plot file always exists.
ROC_COLUMNS: tuple[str, ...] = ("fpr", "tpr", "threshold")
PR_COLUMNS: tuple[str, ...] = ("recall", "precision", "threshold")


def curve_frame(points: dict[str, np.ndarray], columns: tuple[str, ...]) -> pd.DataFrame:
    """A curve as a table with fixed columns (empty but well-formed when undefined)."""
    return pd.DataFrame({name: np.asarray(points[name], dtype=float) for name in columns})


def write_curves(
    out_dir: str | Path, prefix: str, y_true: np.ndarray, score: np.ndarray, max_points: int = 500
) -> None:
    """Write ``<prefix>_roc.csv`` and ``<prefix>_pr.csv`` (at most `max_points` rows each)."""
    out_dir = Path(out_dir)
    write_csv(
        out_dir / f"{prefix}_roc.csv",
        curve_frame(roc_points(y_true, score, max_points), ROC_COLUMNS),
    )
    write_csv(
        out_dir / f"{prefix}_pr.csv", curve_frame(pr_points(y_true, score, max_points), PR_COLUMNS)
    )
