#!/usr/bin/env bash
# Install the DreamerV3 implementations that benchmarks/speed.py times beside Reverie, each in its own virtual
# environment under $PEERS (default ~/.cache/reverie-peers), at the versions benchmarks/speed.py reports:
#
#   official DreamerV3   danijar/dreamerv3 @ e3f0224 (JAX 0.4.33 on the CPU)
#   r2dreamer            NM512/r2dreamer @ 546e4fa (PyTorch; torch 2.13.0 instead of its pinned 2.8, CPU build)
#   sheeprl              0.8.4 from PyPI (dreamer_v3_5)
#   TorchRL              0.14.1 from PyPI (its DreamerV3 recipe ships in the wheel)
#
# usage: bash benchmarks/peers/install.sh OFFICIAL_SRC R2DREAMER_SRC
#   OFFICIAL_SRC, R2DREAMER_SRC: checkouts (or exported snapshots) of the two repositories at those commits, e.g.
#     git clone https://github.com/danijar/dreamerv3 && git -C dreamerv3 checkout e3f0224
#     git clone https://github.com/NM512/r2dreamer && git -C r2dreamer checkout 546e4fa
# The timing scripts beside this one (run_*.sh) read $PEERS; benchmarks/speed.py calls them.
set -euo pipefail
[ $# -eq 2 ] || { sed -n 2,15p "$0"; exit 2; }
for src in "$1" "$2"; do [ -d "$src" ] || { echo "no such folder: $src (a checkout of the peer's repository)" >&2; exit 2; }; done
PEERS=${PEERS:-$HOME/.cache/reverie-peers}
mkdir -p "$PEERS"
rm -rf "$PEERS/dreamerv3" "$PEERS/r2dreamer"
cp -r "$1" "$PEERS/dreamerv3"
cp -r "$2" "$PEERS/r2dreamer"
q=(--quiet --disable-pip-version-check)
# CPU wheels first in every torch venv: an unpinned torch would pull gigabytes of CUDA packages.
python3 -m venv "$PEERS/jax-venv"
"$PEERS/jax-venv/bin/pip" install "${q[@]}" jax==0.4.33 jaxlib==0.4.33 numpy==1.26.4 chex colored_traceback einops \
  elements granular portal scope jaxtyping ninjax optax tqdm av crafter==1.8.3 ruamel.yaml
python3 -m venv "$PEERS/torch-venv"
"$PEERS/torch-venv/bin/pip" install "${q[@]}" torch==2.13.0
"$PEERS/torch-venv/bin/pip" install "${q[@]}" torchrl==0.9.2 tensordict==0.9.1 numpy==1.26.0 hydra-core==1.3.2 \
  omegaconf==2.3.1 gymnasium==1.2.0 crafter==1.8.0 tensorboard==2.21.0 moviepy==1.0.3 einops==0.3.0 \
  ruamel.yaml==0.17.4 "torch==2.13.0"   # crafter 1.8 needs ruamel.yaml < 0.18; r2dreamer logs with tensorboard, moviepy
python3 -m venv "$PEERS/sheeprl-venv"
"$PEERS/sheeprl-venv/bin/pip" install "${q[@]}" torch==2.13.0
"$PEERS/sheeprl-venv/bin/pip" install "${q[@]}" "sheeprl[crafter]==0.8.4" "torch==2.13.0"
python3 -m venv "$PEERS/torchrl-venv"
"$PEERS/torchrl-venv/bin/pip" install "${q[@]}" torch==2.13.0
"$PEERS/torchrl-venv/bin/pip" install "${q[@]}" torchrl==0.14.1 omegaconf hydra-core "torch==2.13.0"
echo "installed into $PEERS; benchmarks/speed.py --peers times them"
