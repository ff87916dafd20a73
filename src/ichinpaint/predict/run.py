"""A whole predict run: folder of DICOM files in, per-series findings (and a submission) out.

Order of events:

1. the decision artifact and the model are read and checked against each other
   (image size, the model's SHA-256 when the decision records it);
2. every file's header is read (`inputs`); unusable files are skipped with a reason;
3. series are stacked, masked and exported (`prepare`); series that cannot be stacked,
   and series of the calibration set, are refused with a reason;
4. detection runs with the decision's detect settings (`detection.runner`, the detect
   stage's code; torch or onnxruntime);
5. evaluate's post-processing, rule and calibrator are applied per series (`findings`).

Counts reconcile: files = scored + skipped + in refused series.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ichinpaint import io
from ichinpaint import manifest as slices_manifest
from ichinpaint import params as p
from ichinpaint.constants import LABELS
from ichinpaint.evaluation.decision import Decision, read_decision
from ichinpaint.predict import findings, inputs, prepare
from ichinpaint.predict.submission import FILL_RULE, build_submission
from ichinpaint.preprocess.mask import MaskSettings

SERIES_COLUMNS = ("series_uid", "study_uid", "n_images", "status", "reason", "detail")
FILE_STATUS_COLUMNS = ("path", "image_id", "series_uid", "status", "reason", "detail")


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """The predict stage's settings: runtime choices and the preprocessing of the stages
    whose params it shares; everything that decides the findings comes from the decision."""

    decision: Path = p.path_option("models/decision.json", "the evaluate stage's decision artifact")
    model: Path = p.path_option(
        "models/inpainter.ckpt", "inpainter weights (+ .json, .onnx beside)"
    )
    backend: str = p.setting(
        "torch", "UNet runtime", choices=("torch", "onnxruntime"), param="detect.backend"
    )
    device: str = p.setting("auto", "auto, cpu, cuda or cuda:N (torch)", param="detect.device")
    batch_size: int = p.setting(
        64, "images per UNet call", rule=p.at_least(1), param="detect.batch_size"
    )
    bf16: bool = p.setting(True, "bf16 UNet (CUDA only)", param=p.NOT_A_PARAM)
    channels_last: bool = p.setting(True, "UNet layout", param=p.NOT_A_PARAM)
    mask_method: str = p.setting(
        "threshold", "brain mask method (params.yaml mask.method)", param="mask.method"
    )
    mask_model_path: str = p.setting("", "mask.model_path (method model)", param="mask.model_path")
    mask_model_size: int = p.setting(
        512, "mask.model_size", rule=p.at_least(8), param="mask.model_size"
    )
    mask_model_output: str = p.setting("logits", "mask.model_output", param="mask.model_output")
    midrange_min_fraction: float = p.setting(
        0.05,
        "png.midrange_min_fraction: slices below are not inpainted (score 0)",
        rule=p.between(0, 1, high_open=True),
        param="png.midrange_min_fraction",
    )
    spacing_tolerance: float = p.setting(
        0.1, "nifti.spacing_tolerance", rule=p.greater_than(0), param="nifti.spacing_tolerance"
    )
    max_overlays: int = p.setting(
        8, "overlay PNGs per series (flagged slices first)", rule=p.at_least(0)
    )
    n_jobs: int = p.setting(-1, "processes for per-series work", rule=p.N_JOBS)
    chunk_series: int = p.setting(
        32,
        "series prepared and detected together (bounds the temporary work folder)",
        rule=p.at_least(1),
        param=p.NOT_A_PARAM,
    )
    keep_work: bool = p.setting(
        False,
        "keep <out>/work (HU volumes, masks, model-grid PNGs and maps)",
        param=p.NOT_A_PARAM,
    )
    allow_other_model: bool = p.setting(
        False,
        "run even if the model is not the one the decision was chosen for",
        param=p.NOT_A_PARAM,
    )

    def mask_options(self) -> dict[str, Any]:
        """The brain-mask method's keyword options, as the mask stage passes them."""
        return MaskSettings(
            method=self.mask_method,
            model_path=self.mask_model_path,
            model_size=self.mask_model_size,
            model_output=self.mask_model_output,
        ).method_options()


def load_checked(options: PredictOptions) -> tuple[Decision, Any, str]:
    """(decision, module, model SHA-256), refusing a model the decision was not made for."""
    from ichinpaint.detection.record import file_sha256
    from ichinpaint.detection.series import pick_device
    from ichinpaint.model import load_inpainter

    decision = read_decision(options.decision)
    if not decision.detect:
        raise ValueError(
            f"{options.decision}: no detect settings (re-run `dvc repro detect evaluate`, "
            "which record them)"
        )
    device = "cpu" if options.backend == "onnxruntime" else options.device
    module, spec = load_inpainter(options.model, device=pick_device(device))
    if spec.img_size != decision.img_size:
        raise ValueError(
            f"{options.model}: model grid {spec.img_size} px, but {options.decision} was "
            f"chosen on {decision.img_size} px maps"
        )
    sha = file_sha256(options.model)
    recorded = decision.detect.get("model_sha256")
    if recorded and recorded != sha and not options.allow_other_model:
        raise ValueError(
            f"{options.model} (sha256 {sha[:12]}) is not the model {options.decision} was chosen "
            f"for (sha256 {recorded[:12]}); re-run evaluate for this model, or --allow_other_model"
        )
    return decision, module, sha


def series_tasks(
    files: pd.DataFrame, work: Path, decision: Decision, options: PredictOptions
) -> tuple[list[prepare.SeriesTask], list[dict[str, Any]]]:
    """Tasks for the usable files' series, and the series refused before stacking."""
    usable = files[files["reason"] == ""]
    calibration = set(decision.calibrator.series_uids)
    tasks, refused = [], []
    for uid, rows in usable.groupby("series_uid", sort=True):
        if uid in calibration:
            refused.append(
                {
                    "series_uid": uid,
                    "study_uid": rows["study_uid"].iloc[0],
                    "n_images": len(rows),
                    "status": "refused",
                    "reason": prepare.IN_CALIBRATION_SET,
                    "detail": "the decision's calibrator was fitted on this series",
                }
            )
            continue
        tasks.append(
            prepare.SeriesTask(
                series_uid=str(uid),
                study_uid=str(rows["study_uid"].iloc[0]),
                paths=tuple(rows["path"]),
                image_ids=tuple(rows["image_id"]),
                positions=tuple(float(p) for p in rows["position"]),
                work_dir=str(work),
                canvas=decision.canvas,
                img_size=decision.img_size,
                min_fraction=options.midrange_min_fraction,
                spacing_tolerance=options.spacing_tolerance,
                mask_method=options.mask_method,
                mask_options=options.mask_options(),
            )
        )
    return tasks, refused


def predicted_manifest(prepared: list[dict[str, Any]]) -> pd.DataFrame:
    """The png manifest of the written series, as detection reads it (labels unknown: 0)."""
    rows = [row for result in prepared for row in result["rows"]]
    manifest = pd.DataFrame(rows, columns=list(slices_manifest.COLUMNS[: -len(LABELS)]))
    for label in LABELS:
        manifest[label] = 0
    manifest["use"] = manifest["use"].astype(bool)
    return manifest


def detect_and_find(
    manifest: pd.DataFrame,
    work: Path,
    series_dir: Path,
    module,
    decision: Decision,
    options: PredictOptions,
    *,
    net,
    provenance: dict[str, Any],
) -> list[dict[str, Any]]:
    """Detection (the detect stage's runner) then the decision, for the series of `manifest`."""
    from ichinpaint.detection.record import settings_from_record
    from ichinpaint.detection.runner import run_detection

    if manifest.empty:
        return []
    (work / "detections").mkdir(parents=True, exist_ok=True)
    settings = settings_from_record(
        decision.detect,
        batch_size=options.batch_size,
        bf16=options.bf16,
        channels_last=options.channels_last,
    )
    run_detection(
        manifest,
        module,
        settings,
        out_dir=work / "detections",
        nifti_dir=prepare.nifti_dir(work),
        n_overlays=0,
        net=net,
    )
    tasks = [
        findings.SeriesFindingsTask(
            series_uid=str(uid),
            rows=rows,
            detection=work / "detections" / f"{uid}.nii.gz",
            hu_volume=prepare.nifti_dir(work) / f"{uid}.nii.gz",
            out_dir=series_dir / str(uid),
            decision=decision,
            provenance=provenance,
            max_overlays=options.max_overlays,
        )
        for uid, rows in manifest.groupby("series_uid", sort=True)
    ]
    return io.parallel_map(
        findings.series_findings, tasks, n_jobs=options.n_jobs, desc="findings", unit="series"
    )


def params_hash(decision: Decision, model_sha256: str, options: PredictOptions) -> str:
    """One hash of what decides the findings: model, decision, preprocessing choices."""
    content = {
        "model_sha256": model_sha256,
        "decision_sha256": decision.sha256(),
        "mask_method": options.mask_method,
        "mask_options": options.mask_options(),
        "midrange_min_fraction": options.midrange_min_fraction,
        "spacing_tolerance": options.spacing_tolerance,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def run_predict(
    input_dir: str | Path,
    out_dir: str | Path,
    options: PredictOptions,
    *,
    kaggle_submission: str | Path | None = None,
) -> dict[str, Any]:
    """Predict on every series of `input_dir` into `out_dir` (replaced whole); returns the counts."""
    from ichinpaint.onnxunet import onnx_net, onnx_path_for

    decision, module, model_sha = load_checked(options)
    net = onnx_net(onnx_path_for(options.model)) if options.backend == "onnxruntime" else None
    provenance = {
        "model": str(options.model),
        "model_sha256": model_sha,
        "decision_sha256": decision.sha256(),
        "params_hash": params_hash(decision, model_sha, options),
        "backend": options.backend,
    }
    decision_used = {
        "threshold_mode": decision.thresholds["mode"],
        "pixel_threshold": float(decision.thresholds["pixel_threshold"]),
        "slice_threshold": float(decision.thresholds["slice_threshold"]),
        "reduction": decision.reduction,
        "calibration": decision.calibrator.procedure,
    }
    files = inputs.scan_inputs(input_dir, n_jobs=options.n_jobs)
    with io.atomic_dir(out_dir) as tmp:
        work = tmp / "work"
        tasks, refused = series_tasks(files, work, decision, options)
        prepared, found = [], []
        # A chunk of series at a time: stage_2_test's thousands of series never sit in
        # the work folder (HU volumes, masks, PNGs, model-grid maps) all at once.
        for first in range(0, len(tasks), options.chunk_series):
            chunk = io.parallel_map(
                prepare.prepare_series,
                tasks[first : first + options.chunk_series],
                n_jobs=options.n_jobs,
                desc=f"prepare series {first + 1}-{min(first + options.chunk_series, len(tasks))}"
                f" of {len(tasks)}",
                unit="series",
            )
            prepared += chunk
            found += detect_and_find(
                predicted_manifest(chunk), work, tmp / "series", module, decision, options,
                net=net, provenance=provenance,
            )  # fmt: skip
            if not options.keep_work:
                shutil.rmtree(work, ignore_errors=True)
        slices = (
            pd.concat([f["slices"] for f in found], ignore_index=True)
            if found
            else (pd.DataFrame(columns=list(findings.SLICE_COLUMNS)))
        )
        series = series_table(prepared, tasks, refused)
        file_status = file_table(files, series)
        io.write_csv(tmp / "slices.csv", slices)
        io.write_csv(tmp / "series.csv", series)
        io.write_csv(tmp / "files.csv", file_status)
        counts = {**summarise(file_status, series, slices, provenance), **decision_used}
        submission = None
        if kaggle_submission:
            submission, sub_counts = build_submission(
                list(files["image_id"]), slices, decision.calibrator
            )
            counts.update(sub_counts, submission=str(kaggle_submission), fill_rule=FILL_RULE)
        io.write_json(tmp / "predict.json", counts)
    if submission is not None:  # after the output folder is in place (it may lie inside it)
        io.write_csv(kaggle_submission, submission)
    return counts


def series_table(
    prepared: list[dict[str, Any]], tasks: list[prepare.SeriesTask], refused: list[dict[str, Any]]
) -> pd.DataFrame:
    rows = list(refused)
    for task, result in zip(tasks, prepared, strict=True):
        rows.append(
            {
                "series_uid": task.series_uid,
                "study_uid": task.study_uid,
                "n_images": result["n_images"],
                "status": "scored" if result["status"] == "written" else "refused",
                "reason": result["reason"],
                "detail": result["detail"],
            }
        )
    return pd.DataFrame(rows, columns=list(SERIES_COLUMNS)).sort_values("series_uid")


def file_table(files: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    """Every input file: scored, skipped (its own reason) or series_refused (the series')."""
    table = files.copy()
    status = series.set_index("series_uid")
    table["status"] = "skipped"
    usable = table["reason"] == ""
    series_status = table.loc[usable, "series_uid"].map(status["status"])
    table.loc[usable, "status"] = series_status.map(
        {"scored": "scored", "refused": "series_refused"}
    )
    refused = usable & (table["status"] == "series_refused")
    table.loc[refused, "reason"] = table.loc[refused, "series_uid"].map(status["reason"])
    table.loc[refused, "detail"] = table.loc[refused, "series_uid"].map(status["detail"])
    return table[list(FILE_STATUS_COLUMNS)]


def summarise(
    files: pd.DataFrame, series: pd.DataFrame, slices: pd.DataFrame, provenance: dict[str, Any]
) -> dict[str, Any]:
    """Counts that reconcile (files = scored + skipped + in refused series), and the hashes."""
    status = files["status"].value_counts()
    counts: dict[str, Any] = {
        "files_total": len(files),
        "files_scored": int(status.get("scored", 0)),
        "files_skipped": int(status.get("skipped", 0)),
        "files_in_refused_series": int(status.get("series_refused", 0)),
        "series_total": len(series),
        "series_scored": int((series["status"] == "scored").sum()),
        "series_refused": int((series["status"] == "refused").sum()),
        "slices_scored": len(slices),
        "slices_used": int(slices["use"].sum()) if len(slices) else 0,
        "slices_flagged": int(slices["predicted"].sum()) if len(slices) else 0,
        "series_flagged": int(slices.groupby("series_uid")["predicted"].any().sum())
        if len(slices)
        else 0,
    }
    assert counts["files_total"] == (
        counts["files_scored"] + counts["files_skipped"] + counts["files_in_refused_series"]
    )
    skipped = files[files["status"] != "scored"]
    for reason, n in skipped["reason"].value_counts().items():
        counts[f"not_scored_{reason}"] = int(n)
    counts.update(provenance)
    return counts
