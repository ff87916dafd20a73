"""The evaluate stage's settings: the ``evaluate`` params, declared once.

The stage's command-line options are made from this dataclass (`ichinpaint.params`),
and the review app starts from and edits the same type, so the page and `dvc exp run`
can never mean different things by a setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from ichinpaint import params as p
from ichinpaint.evaluation.normalize import MODES as NORMALIZE_MODES
from ichinpaint.evaluation.thresholds import MODES
from ichinpaint.scores import COMPONENT_SCORE, REDUCTIONS


@dataclass(frozen=True)
class Settings:
    """Everything the evaluation depends on besides the input files."""

    threshold_mode: str = p.setting(
        "percentile",
        "percentile: pixel threshold from healthy validation pixels, a slice is positive "
        "when a detection survives; fpr: also a slice-score threshold at target_fpr",
        choices=MODES,
    )
    percentile: float = p.setting(
        99.5,
        "percentile of healthy validation brain pixels used as the pixel threshold",
        rule=p.between(0, 100, low_open=True),
    )
    target_fpr: float = p.setting(
        0.05,
        "fpr mode: fraction of healthy validation slices allowed above the slice threshold",
        rule=p.between(0, 1, high_open=True),
    )
    normalize: str = p.setting(
        "location",
        "none | location: divide maps by the healthy spread at each depth from the mask "
        "edge and slice level, learned on healthy validation series",
        choices=NORMALIZE_MODES,
    )
    erosion_px: int = p.setting(
        0,
        "erode the brain mask by this many pixels (skull rim false positives)",
        rule=p.at_least(0),
    )
    median_size: int = p.setting(3, "median filter size in pixels (<= 1: none)", rule=p.at_least(0))
    min_component_px: int = p.setting(
        4, "drop detected components smaller than this (pixels)", rule=p.at_least(0)
    )
    consistency_3d: bool = p.setting(
        True, "keep a detection only if it overlaps one on an adjacent slice"
    )
    reduction: str = p.setting(
        "score_components",
        "slice score used for ROC/AP, the fpr threshold and the probabilities; "
        "score_components: from the post-processed detections (largest component's mass; "
        "percentile mode only)",
        choices=REDUCTIONS,
    )
    n_splits: int = p.setting(
        5, "patient folds for cross-fitting the probabilities on test", rule=p.at_least(2)
    )
    gallery_per_category: int = p.setting(
        3,
        "overlay PNGs per category (TP per subtype, missed bleeds, false positives)",
        rule=p.at_least(0),
    )
    # At 64 px on a 256 canvas of ~0.9 mm pixels, 2 px ~ 7 mm.
    rim_px: int = p.setting(
        2,
        "false positives within this many pixels of the brain mask edge count as 'rim'",
        rule=p.at_least(0),
    )
    n_jobs: int = p.setting(-1, "parallel series (-1: all cores)", rule=p.N_JOBS)
    canvas: int = p.setting(
        256, "png stage canvas (ground truth geometry)", rule=p.at_least(8), param="png.canvas"
    )
    img_size: int = p.setting(
        64, "model grid size in pixels", rule=p.at_least(8), param="png.img_size"
    )

    def check(self) -> None:
        """Refuse a reduction the threshold mode cannot make (before any series is read)."""
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.reduction == COMPONENT_SCORE and self.threshold_mode != "percentile":
            raise ValueError(
                f"reduction {COMPONENT_SCORE} needs threshold_mode percentile: it is made of "
                "the detections, which exist only once the pixel threshold is chosen"
            )
