#!/usr/bin/env bash
# Wheels for an offline GPU machine (no package index reachable there), built HERE.
#
# The GPU image has torch, numpy, pandas, PIL, yaml, tqdm, scipy, sklearn, opencv;
# benchmarks/device_packages.txt lists what it lacks, installed at requirements.lock's
# versions. Pure-Python packages: `pip wheel --no-deps` (antlr4 has only an sdist); the
# compiled ones (pydantic_core, simsimd, stringzilla): `pip download` of the binary wheel
# for the GPU image's Python ($DEVICE_PYTHON_VERSION, default 3.12) on manylinux x86-64.
# Then call the device with carry [".whl"]; benchmarks/device_env.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_DIR="${WHEEL_DIR:-.whl}"
PY="${PYTHON:-python3}"
TARGET_PY="${DEVICE_PYTHON_VERSION:-3.12}"
mkdir -p "$WHEEL_DIR"
for name in $(grep -v "^#" benchmarks/device_packages.txt); do
    pin=$(grep -i -E "^${name}==" requirements.lock || true)
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEEL_DIR" "${pin:-$name}" 2>/dev/null; then
        "$PY" -m pip wheel -q --no-deps "${pin:-$name}" -w "$WHEEL_DIR"  # sdist only: pure Python
    fi
done
ls -la "$WHEEL_DIR"
