"""Serve the review app: a Streamlit page that shows one CT series at a time with the
anomaly map, the detections after post-processing and the ground truth, a strip of
per-slice scores, and every thresholding control evaluation offers. "Save as params"
writes the chosen `evaluate` keys to params.yaml. It reads the pipeline's outputs
(slices at native resolution when the HU volumes are there) or, with --predictions,
a predict output folder, and never runs the model. Listens on 127.0.0.1 only; stop it with Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

from ichinpaint import params as p

SCRIPT = Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py"
ADDRESS = "127.0.0.1"
# Options forwarded to the page after `--` (they name the pipeline's outputs).
FORWARDED = (
    "root",
    "slices",
    "detections",
    "metrics",
    "ground_truth",
    "params",
    "n_jobs",
    "nifti",
    "predictions",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (127.0.0.1)")
    parser.add_argument(
        "--root", default=".", help="repository root; the other paths are relative to it"
    )
    parser.add_argument(
        "--slices", default="data/processed/slices.csv", help="png stage slice manifest"
    )
    parser.add_argument(
        "--detections", default="data/detections", help="detect stage anomaly maps folder"
    )
    parser.add_argument(
        "--metrics",
        default="metrics/reports/detection.json",
        help="evaluate stage metrics (the thresholds it chose; optional)",
    )
    parser.add_argument(
        "--ground_truth",
        default="",
        help="ground-truth folder (default: <data.raw_dir>/ground_truth from params.yaml)",
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file read and written by the app"
    )
    parser.add_argument(
        "--nifti",
        default="data/interim/nifti",
        help="HU volumes (nifti stage): the slice is shown at native resolution when present",
    )
    parser.add_argument(
        "--predictions",
        default="",
        help="open this predict output folder instead of the pipeline's outputs",
    )
    parser.add_argument(
        "--n_jobs",
        type=int,
        default=-1,
        help="parallel series when pooling healthy validation (-1: all cores)",
    )


PARAM_RULES = {"port": p.between(1, 65535), "n_jobs": p.N_JOBS}


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line for these options (headless, local address only)."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SCRIPT),
        "--server.headless",
        "true",
        "--server.address",
        ADDRESS,
        "--server.port",
        str(args.port),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--",
    ]
    for name in FORWARDED:
        command += [f"--{name}", str(getattr(args, name))]
    return command


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into the same path as Ctrl-C, so the server child is stopped too.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> str:
    print(f"review app on http://{ADDRESS}:{args.port} (Ctrl-C stops it)", flush=True)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    server = subprocess.Popen(streamlit_command(args))
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:  # never leave the server running behind us
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    if code != 0:
        raise SystemExit(f"streamlit exited with status {code}")
    return f"review app on http://{ADDRESS}:{args.port} stopped"
