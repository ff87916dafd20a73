# Sourced by the prepared GPU scripts (device_check.sh, gpu_detector.sh): sets PY (the
# interpreter) and PYTHONPATH (src/, plus the packages the GPU image lacks).
#
# Environment (all optional):
#   DEVICE_CHECK_PYTHON   use this interpreter as it is (no venv; what the tests do)
#   DEVICE_CHECK_OFFLINE  skip the package index; install from $WHEEL_DIR at once
#   WHEEL_DIR             wheels for an offline machine (default .whl; device_wheels.sh)
#
# - a GPU image whose python3 already has torch (the device machines here): the packages
#   it lacks (benchmarks/device_packages.txt, at requirements.lock's versions) go into
#   .venv-device/site with --no-deps, from the index when reachable, else from
#   $WHEEL_DIR, so the image's CUDA torch stack is used as it is;
# - a machine whose python3 has no torch: a full venv .venv-device from requirements.lock.
# The package itself runs from src/.
DEVICE_PACKAGES=$(grep -v "^#" benchmarks/device_packages.txt | tr "\n" " ")
WHEEL_DIR="${WHEEL_DIR:-.whl}"
SITE=""
BASE="${DEVICE_CHECK_BASE_PYTHON:-python3}"
if [ -n "${DEVICE_CHECK_PYTHON:-}" ]; then
    PY="$DEVICE_CHECK_PYTHON"
elif "$BASE" -c "import torch" 2>/dev/null; then
    PY="$BASE"
    SITE="$PWD/.venv-device/site"
    if [ ! -f "$SITE/.installed" ]; then  # a second script on the same machine reuses it
        mkdir -p "$SITE"
        pins=$(for name in $DEVICE_PACKAGES; do grep -i -E "^${name}==" requirements.lock || echo "$name"; done)
        if [ -n "${DEVICE_CHECK_OFFLINE:-}" ] || ! timeout 120 "$PY" -m pip install -q --no-deps \
            --retries 0 --timeout 10 --target "$SITE" $pins 2>/dev/null; then
            echo "device_env: no package index; installing from $WHEEL_DIR"
            if ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
                "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
                    --target "$SITE" "$WHEEL_DIR"/*.whl && touch "$SITE/.installed"
            fi
        else
            touch "$SITE/.installed"
        fi
    fi
else
    VENV=.venv-device
    [ -x "$VENV/bin/python" ] || "$BASE" -m venv "$VENV" || return 1
    timeout 300 "$VENV/bin/pip" install -q -r requirements.lock || echo "device_env: pip failed"
    PY="$VENV/bin/python"
fi
export PYTHONPATH="$PWD/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
