#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the test suite with every learner on cuda (train.device=auto picks it),
# then the speed benchmark on the GPU. CI has no GPU; run this by hand where one is present.
#
#   bash scripts/gpu_check.sh            # logs and speed_cuda.{json,png} under benchmarks/results (or $OUT)
#
# Python packages the machine lacks can be put as wheels in .whl/ (installed to /tmp/site, no network).
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${GPU_CHECK_WORKERS:-8}")
# shellcheck disable=SC2086
timeout "${GPU_CHECK_TEST_S:-300}" python3 -m pytest tests -q -p no:cacheprovider $workers -rfE 2>&1 | tee "$out/gpu_tests.log"
echo "pytest exit: ${PIPESTATUS[0]}"
timeout "${GPU_CHECK_SPEED_S:-200}" python3 benchmarks/speed.py --device cuda \
  --sizes ${GPU_CHECK_SIZES:-debug size1m size12m size50m} --repeats 5 2>&1 | tee "$out/gpu_speed.log"
echo "speed exit: ${PIPESTATUS[0]}"
[ "$out" = benchmarks/results ] || cp benchmarks/results/speed_cuda.* "$out"/ 2>/dev/null
