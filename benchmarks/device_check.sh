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
# The environment: benchmarks/device_env.sh (sets PY and PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT_S="${DEVICE_CHECK_LIMIT_S:-480}"
START=$(date +%s)

source benchmarks/device_env.sh || exit 1

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
