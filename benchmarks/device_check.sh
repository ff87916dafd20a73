#!/usr/bin/env bash
# The prepared GPU check (issue 13): make an environment, run benchmarks/device_check.py
# within a hard time limit, print its one table (and keep it in $OUT or benchmarks/).
#
#   benchmarks/device_check.sh                 # on the GPU machine, from the repo root
#
# Environment (all optional):
#   DEVICE_CHECK_PYTHON   use this interpreter as it is (no venv; what the tests do)
#   DEVICE_CHECK_LIMIT_S  hard wall-clock limit of the check, seconds (default 480 = 8 min)
#   DEVICE_CHECK_ARGS     extra options for device_check.py (e.g. "--smoke none")
#   WHEEL_DIR             wheels for an offline machine (default .whl; see docs/detection.md)
#
# The environment, from requirements.lock's pins:
# - a GPU image whose python3 already has torch (the device machines here): the packages
#   it lacks (PINNED below, at the lock's versions) go into .venv-device/site with
#   --no-deps, from the index when reachable, else from $WHEEL_DIR (prepared elsewhere by
#   benchmarks/device_wheels.sh), so the image's CUDA torch stack is used as it is;
# - a machine whose python3 has no torch: a full venv .venv-device from requirements.lock.
# The package itself runs from src/.
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT_S="${DEVICE_CHECK_LIMIT_S:-480}"
START=$(date +%s)
WHEEL_DIR="${WHEEL_DIR:-.whl}"

PINNED="mediffusion bkh-pytorch-utils omegaconf antlr4-python3-runtime torchextractor monai nibabel overrides pytorch-lightning setuptools"
SITE=""
BASE="${DEVICE_CHECK_BASE_PYTHON:-python3}"
if [ -n "${DEVICE_CHECK_PYTHON:-}" ]; then
    PY="$DEVICE_CHECK_PYTHON"
elif "$BASE" -c "import torch" 2>/dev/null; then
    PY="$BASE"
    SITE="$PWD/.venv-device/site"
    mkdir -p "$SITE"
    pins=$(for name in $PINNED; do grep -i -E "^${name}==" requirements.lock || echo "$name"; done)
    if [ -n "${DEVICE_CHECK_OFFLINE:-}" ] || ! timeout 120 "$PY" -m pip install -q --no-deps \
        --retries 0 --timeout 10 --target "$SITE" $pins 2>/dev/null; then
        echo "device_check: no package index; installing from $WHEEL_DIR"
        if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
            "$PY" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" "$WHEEL_DIR"/*.whl
        fi
    fi
else
    VENV=.venv-device
    [ -x "$VENV/bin/python" ] || "$BASE" -m venv "$VENV" || exit 1
    timeout 300 "$VENV/bin/pip" install -q -r requirements.lock || echo "device_check: pip failed"
    PY="$VENV/bin/python"
fi
export PYTHONPATH="$PWD/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$PY" -c "import torch, mediffusion, nibabel, pandas, yaml, PIL, tqdm, omegaconf" 2>/dev/null; then
    echo "device_check: missing packages; the import error:"
    "$PY" -c "import torch, mediffusion, nibabel, pandas, yaml, PIL, tqdm, omegaconf"
    echo "Prepare wheels here with benchmarks/device_wheels.sh and carry $WHEEL_DIR."
    exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
if [ "$LEFT" -lt 30 ]; then
    echo "device_check: only ${LEFT} s left after the setup; nothing measured"
    exit 3
fi
TABLE="${OUT:-benchmarks}/device_check_table.md"
# The script stops starting rows at budget_s; the hard timeout leaves it 30 s to finish.
timeout --signal=INT --kill-after=10 "$LEFT" "$PY" benchmarks/device_check.py \
    --budget_s $(( LEFT - 60 > 20 ? LEFT - 60 : 20 )) --out "$TABLE" ${DEVICE_CHECK_ARGS:-}
STATUS=$?
echo "device_check: exit $STATUS, $(( $(date +%s) - START )) s in all; table in $TABLE"
exit $STATUS
