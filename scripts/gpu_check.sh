#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in a few minutes: the test suite with every learner on cuda (train.device=auto
# picks it), then the side-by-side speed benchmark on the GPU (benchmarks/speed.py --device cuda: ms per update,
# kernel launches per update, the GPU's busy share; eager and compiled), and TorchRL's own DreamerV3 learner
# benchmark on the same GPU when TorchRL 0.14.1 and its recipe are there. CI has no GPU; run this by hand.
#
#   bash scripts/gpu_check.sh          # logs and speed_cuda.{json,png} under benchmarks/results (or $OUT)
#
# Without a network: put the wheels the machine lacks in .whl/ (installed to /tmp/site), and TorchRL's recipe folder
# (sota-implementations/dreamer_v3 of pytorch/rl at v0.14.1, with its config*.yaml) in $TORCHRL_RECIPE.
# Time limits: GPU_CHECK_TEST_S (tests, default 240 s), GPU_CHECK_SPEED_S (Reverie, 300 s), GPU_CHECK_TORCHRL_S (120 s).
set -uo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${GPU_CHECK_WORKERS:-8}")
# shellcheck disable=SC2086
timeout "${GPU_CHECK_TEST_S:-240}" python3 -m pytest tests -q -p no:cacheprovider $workers -rfE 2>&1 | tee "$out/gpu_tests.log"
echo "pytest exit: ${PIPESTATUS[0]}"
# Reverie: fp32 eager, fp32 compiled (a CUDA graph of each update) and bf16 compiled, size1m and size12m.
timeout "${GPU_CHECK_SPEED_S:-300}" python3 benchmarks/speed.py --device cuda --sizes ${GPU_CHECK_SIZES:-size1m size12m} \
  --variants fp32:eager fp32:compiled bf16:compiled --repeats 10 2>&1 | tee "$out/gpu_speed.log"
echo "speed exit: ${PIPESTATUS[0]}"
# TorchRL 0.14.1's learner benchmark (its DMC Walker size1m learner, compiled scan + CUDA graph), same GPU.
recipe=${TORCHRL_RECIPE:-}
if [ -n "$recipe" ] && [ -f "$recipe/config.yaml" ] && python3 -c "import torchrl" 2>/dev/null; then
  bench=$(python3 -c "import torchrl, pathlib; print(pathlib.Path(torchrl.__file__).parents[1] / 'benchmarks/ad_hoc/bench_dreamer_v3_learner.py')")
  root=$(mktemp -d); mkdir -p "$root/sota-implementations"; cp -r "$recipe" "$root/sota-implementations/dreamer_v3"
  (cd "$root" && timeout "${GPU_CHECK_TORCHRL_S:-120}" python3 "$bench" --device cuda) 2>&1 | tee "$out/gpu_torchrl.log"
  echo "torchrl exit: ${PIPESTATUS[0]}"
else
  echo "TorchRL not timed: needs torchrl 0.14.1 importable and \$TORCHRL_RECIPE with its dreamer_v3 recipe and configs" \
    | tee "$out/gpu_torchrl.log"
fi
[ "$out" = benchmarks/results ] || cp benchmarks/results/speed_cuda.* "$out"/ 2>/dev/null
