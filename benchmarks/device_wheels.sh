#!/usr/bin/env bash
# Wheels for an offline GPU machine (no package index reachable there), built HERE.
#
# The GPU image has torch, Lightning, numpy, pandas, PIL, yaml, tqdm; detection and
# training also import these pure-Python packages, at the versions of requirements.lock.
# `pip wheel --no-deps` fetches a wheel or builds one from the sdist (antlr4 has only an
# sdist); all are py3-none-any, so they install on the machine's Python whatever it is.
# Then call the device with carry [".whl"]; benchmarks/device_check.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_DIR="${WHEEL_DIR:-.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$WHEEL_DIR"
# pytorch-lightning 2.0.0 (the lock's; it needs pkg_resources, hence setuptools < 81)
# replaces the image's newer Lightning, so the check runs the versions the tests run.
for name in mediffusion bkh-pytorch-utils omegaconf antlr4-python3-runtime torchextractor \
    monai nibabel overrides pytorch-lightning setuptools; do
    pin=$(grep -i -E "^${name}==" requirements.lock || true)
    "$PY" -m pip wheel -q --no-deps "${pin:-$name}" -w "$WHEEL_DIR"
done
ls -la "$WHEEL_DIR"
