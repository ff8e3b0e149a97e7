"""Timing harness for NM512/r2dreamer (unmodified checkout at $R2DIR).

Runs r2dreamer's own train.py (Hydra overrides come from argv) and wraps
Dreamer.update with a wall-clock timer. Each update appends one JSON row to
$BENCH_OUT:  {"i": n, "t0": start (time.time), "dur": seconds}.
Also prints parameter counts (world model / actor / critic) as "PARAMS ..." lines.

env:
  R2DIR      r2dreamer checkout (default ~/.cache/reverie-peers/r2dreamer)
  BENCH_OUT  file for the per-update rows (required)
  AMP        bf16 (default) | fp16 (the repo's own autocast dtype) | off (fp32)
"""

import json
import os
import sys
import time

R2DIR = os.environ.get("R2DIR", os.path.expanduser("~/.cache/reverie-peers/r2dreamer"))
OUT = os.environ["BENCH_OUT"]
AMP = os.environ.get("AMP", "bf16")
sys.path.insert(0, R2DIR)
sys.argv[0] = os.path.join(R2DIR, "train.py")

import dreamer  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    # r2dreamer's envs/parallel.py calls TensorDict.pin_memory() unconditionally; a CPU-only
    # torch raises "Cannot access accelerator device when none is available". Pinning is a
    # GPU-transfer optimisation only, so make it a no-op here (the repo itself is untouched).
    import tensordict

    for _cls in {tensordict.TensorDictBase, tensordict.TensorDict}:
        _cls.pin_memory = lambda self, *a, **k: self

if AMP != "fp16":
    _dtype = {"bf16": torch.bfloat16, "off": torch.float32}[AMP]

    def _autocast(device_type, dtype=None, **kw):
        return torch.autocast(device_type, dtype=_dtype, enabled=(AMP != "off"))

    dreamer.autocast = _autocast

    # metrics computed under bf16 autocast can be bf16 tensors; tools.to_np -> numpy fails on them
    import tools

    _to_np = tools.to_np
    tools.to_np = lambda x: _to_np(x.float() if torch.is_tensor(x) and x.dtype == torch.bfloat16 else x)

_orig_init = dreamer.Dreamer.__init__
_orig_update = dreamer.Dreamer.update


def _count(mods):
    return sum(p.numel() for m in mods if m is not None for p in m.parameters())


def _init(self, config, *a, **kw):
    _orig_init(self, config, *a, **kw)
    wm = [self.encoder, self.rssm, self.reward, self.cont, getattr(self, "decoder", None), getattr(self, "prj", None)]
    n_wm, n_act, n_val = _count(wm), _count([self.actor]), _count([self.value])
    print(
        f"PARAMS world_model={n_wm:,} actor={n_act:,} critic={n_val:,} "
        f"total={n_wm + n_act + n_val:,} (excl. slow critic) rep_loss={self.rep_loss} "
        f"amp={AMP} threads={torch.get_num_threads()} torch={torch.__version__}",
        flush=True,
    )


_n = [0]


def _update(self, replay_buffer):
    t0 = time.time()
    out = _orig_update(self, replay_buffer)
    dur = time.time() - t0
    _n[0] += 1
    with open(OUT, "a") as f:
        f.write(json.dumps({"i": _n[0], "t0": t0, "dur": dur}) + "\n")
    return out


dreamer.Dreamer.__init__ = _init
dreamer.Dreamer.update = _update

os.chdir(R2DIR)
import runpy  # noqa: E402

# run train.py as __main__ so Hydra resolves configs/ next to it
runpy.run_path(os.path.join(R2DIR, "train.py"), run_name="__main__")
