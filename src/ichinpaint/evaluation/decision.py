"""The decision artifact (``models/decision.json``): evaluate's choices, frozen for predict.

`evaluate` chooses everything that turns an anomaly map into findings: the
post-processing, the pixel threshold (healthy validation), the slice rule, the slice
score reduction, and a probability calibrator. `predict` must apply exactly those
choices to new, unlabelled studies and never re-choose anything on the data it
scores, so evaluate writes them here and predict only reads them.

Calibration procedure ``heldout-test-platt``: a Platt (logistic) regression of
"any hemorrhage" on the slice score, fitted once on **every** slice of evaluate's
labelled ``test`` split (patients never used for training, nor for choosing the
thresholds, which come from healthy ``val`` series). It is stored as
``p = sigmoid(slope * score + intercept)``, with the per-subtype share among the
positive calibration slices (``p_subtype = p_any * share``, as evaluate's submission)
and the label prevalences (the fill value for images predict cannot score). The
calibration series UIDs are stored too: predict refuses to score them, so a
probability never comes from a calibrator fitted on the very series it describes.
(evaluate's own ``data/submission.csv`` stays cross-fitted by patient: there the
scored and the labelled slices are the same.)

The artifact is versioned (``version``); readers refuse versions they do not know,
and unknown extra keys are kept (``extra``) so later versions can add fields, such
as a location-dependent normaliser of the maps, without breaking this reader.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ichinpaint.constants import LABELS, SUBTYPES
from ichinpaint.evaluation.calibration import smoothed_prevalence
from ichinpaint.evaluation.thresholds import Thresholds
from ichinpaint.io import read_json, write_json

DECISION_VERSION: int = 1
CALIBRATION_PROCEDURE: str = "heldout-test-platt"
KNOWN_VERSIONS: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Calibrator:
    """Slice score -> probability of each label, fitted on labelled held-out series only."""

    procedure: str
    score: str  # the reduction the calibrator reads (e.g. score_top1pct)
    slope: float
    intercept: float
    subtype_shares: dict[str, float]
    prevalence: dict[str, float]  # per label, smoothed: the fill rule for unscored images
    n_slices: int
    n_positive: int
    n_patients: int
    series_uids: tuple[str, ...]  # the calibration series: predict refuses to score them

    def p_any(self, scores: np.ndarray) -> np.ndarray:
        z = self.slope * np.asarray(scores, dtype=float) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """``(n, 6)`` in LABELS order: subtypes = p_any x their share (never above "any")."""
        p_any = self.p_any(scores)
        shares = np.array([self.subtype_shares[s] for s in SUBTYPES], dtype=float)
        return np.column_stack([p_any[:, None] * shares[None, :], p_any])

    def fill_row(self) -> np.ndarray:
        """The probabilities given to an image that could not be scored: label prevalences."""
        return np.array([self.prevalence[label] for label in LABELS], dtype=float)


def fit_calibrator(
    scores: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    series_uids: np.ndarray,
    *,
    score_name: str,
) -> Calibrator:
    """Platt scaling on labelled held-out slices (`labels` is ``(n, 6)`` in LABELS order).

    The regression is the one evaluate cross-fits (standardised score, sklearn's
    default L2 logistic regression), folded back into one slope and intercept on the
    raw score. One class only: slope 0 and the smoothed prevalence.
    """
    from sklearn.linear_model import LogisticRegression

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=int)
    if labels.shape != (len(scores), len(LABELS)):
        raise ValueError(f"labels must be ({len(scores)}, {len(LABELS)}), got {labels.shape}")
    if len(scores) == 0:
        raise ValueError("no labelled held-out slices to fit the calibrator on")
    y = labels[:, LABELS.index("any")]
    if len(np.unique(y)) < 2 or np.std(scores) == 0:
        slope, intercept = 0.0, _logit(smoothed_prevalence(y))
    else:
        mean, std = float(scores.mean()), float(scores.std())
        model = LogisticRegression().fit(((scores - mean) / std)[:, None], y)
        w, c = float(model.coef_[0, 0]), float(model.intercept_[0])
        slope, intercept = w / std, c - w * mean / std
    positives = labels[y == 1]
    shares = {
        s: float((positives[:, j].sum() + 0.5) / (len(positives) + 1))
        for j, s in enumerate(SUBTYPES)
    }
    return Calibrator(
        procedure=CALIBRATION_PROCEDURE,
        score=score_name,
        slope=slope,
        intercept=intercept,
        subtype_shares=shares,
        prevalence={label: smoothed_prevalence(labels[:, j]) for j, label in enumerate(LABELS)},
        n_slices=len(scores),
        n_positive=int(y.sum()),
        n_patients=len(set(np.asarray(patient_ids).astype(str))),
        series_uids=tuple(sorted(set(np.asarray(series_uids).astype(str)))),
    )


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class Decision:
    """Everything predict needs to reproduce evaluate's decision on a new anomaly map."""

    canvas: int
    img_size: int
    detect: dict[str, Any] | None  # the detect stage's settings.json (strategy, sizes, model hash)
    postprocess: dict[str, Any]  # erosion_px, median_size, min_component_px, consistency_3d
    thresholds: dict[str, Any]  # mode, pixel_threshold, slice_threshold, decision_score
    reduction: str
    calibrator: Calibrator
    provenance: dict[str, Any] = field(default_factory=dict)
    # The location normaliser fitted on healthy validation (evaluation.normalize), or None.
    normalizer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of later versions, kept as read
    version: int = DECISION_VERSION

    def slice_rule(self) -> Thresholds:
        t = self.thresholds
        return Thresholds(
            mode=str(t["mode"]),
            pixel_threshold=float(t["pixel_threshold"]),
            slice_threshold=float(t["slice_threshold"]),
            decision_score=str(t["decision_score"]),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["calibrator"]["series_uids"] = list(self.calibrator.series_uids)
        extra = data.pop("extra")
        return {**extra, **data}

    def sha256(self) -> str:
        """A hash of the decision's content (what predict reports with the model's)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def build_decision(
    *,
    canvas: int,
    img_size: int,
    detect: dict[str, Any] | None,
    erosion_px: int,
    median_size: int,
    min_component_px: int,
    consistency_3d: bool,
    thresholds: Thresholds,
    reduction: str,
    calibrator: Calibrator,
    provenance: dict[str, Any] | None = None,
    normalizer: dict[str, Any] | None = None,
) -> Decision:
    return Decision(
        canvas=int(canvas),
        img_size=int(img_size),
        detect=detect,
        postprocess={
            "erosion_px": int(erosion_px),
            "median_size": int(median_size),
            "min_component_px": int(min_component_px),
            "consistency_3d": bool(consistency_3d),
        },
        thresholds={
            "mode": thresholds.mode,
            "pixel_threshold": float(thresholds.pixel_threshold),
            "slice_threshold": float(thresholds.slice_threshold),
            "decision_score": thresholds.decision_score,
        },
        reduction=reduction,
        calibrator=calibrator,
        provenance=dict(provenance or {}),
        normalizer=normalizer,
    )


def write_decision(path: str | Path, decision: Decision) -> None:
    write_json(path, decision.to_dict())


def read_decision(path: str | Path) -> Decision:
    """Read and check a decision artifact; errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no decision artifact (the evaluate stage writes it: `dvc repro evaluate`)"
        )
    data = read_json(path)
    version = data.get("version")
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"{path}: decision version {version!r} is not one of {KNOWN_VERSIONS}")
    required = ("canvas", "img_size", "postprocess", "thresholds", "reduction", "calibrator")
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{path}: decision lacks {missing}")
    known = {*required, "detect", "provenance", "version", "normalizer"}
    cal = dict(data["calibrator"])
    cal["series_uids"] = tuple(cal.get("series_uids", ()))
    try:
        calibrator = Calibrator(**cal)
    except TypeError as error:
        raise ValueError(
            f"{path}: calibrator fields are not the expected ones ({error})"
        ) from error
    return Decision(
        canvas=int(data["canvas"]),
        img_size=int(data["img_size"]),
        detect=data.get("detect"),
        postprocess=dict(data["postprocess"]),
        thresholds=dict(data["thresholds"]),
        reduction=str(data["reduction"]),
        calibrator=calibrator,
        provenance=dict(data.get("provenance") or {}),
        normalizer=data.get("normalizer"),
        extra={k: v for k, v in data.items() if k not in known},
        version=int(version),
    )


# ---------------------------------------------------------------- from the evaluate stage

DETECT_SETTINGS_FILE = "settings.json"  # written by the detect stage beside the maps


def decision_from_evaluation(paths: Any, settings: Any, evaluation: Any) -> Decision:
    """The decision of a finished evaluation (`pipeline.Paths`, `evaluation.settings.Settings`,
    the `pipeline.Evaluation` it returned).

    The thresholds are the ones evaluate reported; the calibrator is fitted on the test
    split's slice scores as evaluate computed them.
    """
    metrics = evaluation.metrics
    thresholds = Thresholds(
        mode=str(metrics["threshold_mode"]),
        pixel_threshold=float(metrics["pixel_threshold"]),
        slice_threshold=float(metrics["slice_threshold"]),
        decision_score=str(metrics["slice_decision_score"]),
    )
    normalizer = metrics.get("location_normalizer")
    table = evaluation.test
    calibrator = fit_calibrator(
        table[settings.reduction].fillna(0.0).to_numpy(),
        table[list(LABELS)].to_numpy(),
        table["patient_id"].to_numpy(),
        table["series_uid"].to_numpy(),
        score_name=settings.reduction,
    )
    detect_path = Path(paths.detections) / DETECT_SETTINGS_FILE
    return build_decision(
        canvas=settings.canvas,
        img_size=settings.img_size,
        detect=read_json(detect_path) if detect_path.is_file() else None,
        erosion_px=settings.erosion_px,
        median_size=settings.median_size,
        min_component_px=settings.min_component_px,
        consistency_3d=settings.consistency_3d,
        thresholds=thresholds,
        reduction=settings.reduction,
        calibrator=calibrator,
        normalizer=normalizer,
        provenance={
            "thresholds_chosen_on": "healthy val series",
            "val_healthy_series": metrics.get("val_healthy_series"),
            "val_healthy_slices": metrics.get("val_healthy_slices"),
            "percentile": settings.percentile,
            "target_fpr": settings.target_fpr,
            "calibrated_on": "every slice of the labelled test split",
        },
    )
