#!/usr/bin/env bash
# The GPU detector experiment (issue 11): is the detector limited by its model?
# Makes the environment (benchmarks/device_env.sh), then runs benchmarks/gpu_detector.py
# within a hard time limit; its table goes to $OUT (or runs/) as gpu_detector.md + .json.
#
#   benchmarks/device_wheels.sh                                   # here, once: .whl/
#   .venv/bin/python benchmarks/gpu_detector.py --prepare         # here: .gpu/commands.json
#   benchmarks/gpu_detector.sh                                    # there; carry .whl and .gpu
#
# Environment (all optional): GPU_DETECTOR_LIMIT_S (default 360), GPU_DETECTOR_ARGS
# (extra options for gpu_detector.py), and device_env.sh's.
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT_S="${GPU_DETECTOR_LIMIT_S:-360}"
START=$(date +%s)
source benchmarks/device_env.sh || exit 1
if [ ! -f .gpu/commands.json ]; then
    echo "gpu_detector: .gpu/commands.json missing; run gpu_detector.py --prepare here, carry .gpu"
    exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.cuda.is_available())"
LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
# The script sizes its runs to budget_s; the hard timeout leaves it 30 s more.
timeout --signal=INT --kill-after=10 "$LEFT" "$PY" benchmarks/gpu_detector.py \
    --budget_s $(( LEFT - 30 > 20 ? LEFT - 30 : 20 )) --out "${OUT:-runs}/gpu_detector.md" \
    ${GPU_DETECTOR_ARGS:-}
STATUS=$?
echo "gpu_detector: exit $STATUS, $(( $(date +%s) - START )) s in all"
exit $STATUS
