"""benchmarks/device_check.sh runs everywhere: without CUDA it says so and runs the tiny model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: run the script itself")
def test_device_check_falls_back_to_the_tiny_model_on_cpu(tmp_path):
    env = {
        **os.environ,
        "DEVICE_CHECK_PYTHON": sys.executable,  # no venv in a test
        "DEVICE_CHECK_ARGS": "--smoke none --seconds 0.2 --train_steps 1",
        "OUT": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/device_check.sh")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "CUDA is absent" in done.stdout
    table = (tmp_path / "device_check_table.md").read_text()
    assert table in done.stdout  # the one table is printed
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")][1:]
    by_mode = {(r[0].strip(), r[1].strip()): [c.strip() for c in r[2:]] for r in rows}
    for section in ("detect UNet", "train"):
        for mode in ("fp32 eager", "bf16 + channels_last + sdpa"):
            assert float(by_mode[(section, mode)][1].replace(",", "")) > 0, (section, mode)
        compiled = [m for s, m in by_mode if s == section and "compile" in m]
        assert compiled and "skipped: needs CUDA" in by_mode[(section, compiled[0])][-1]
    projection = by_mode[("projection", "36-slice series at the best detect rate")]
    assert float(projection[3].replace(",", "")) > float(projection[4].replace(",", "")) > 0
