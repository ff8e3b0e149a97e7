"""Dream frames per second of the studio on one CPU thread: ``DreamEnv.step`` including the decoder.

The model is an untrained ``size12m`` Dreamer for 64x64x3 images and Crafter's 17 actions: a trained one
costs exactly the same per step. Each step is one prior transition, the image decoder, the reward and
continue heads; the studio additionally encodes the frame as PNG, timed separately
(``fps_with_png``). The target is 60 frames/s. The same size with ``model.kind=transformer`` (4 shortcut steps and
one cache extension per frame) is timed beside it, under ``transformer`` (target 20 frames/s, real time).

    python benchmarks/studio_fps.py            # writes benchmarks/results/studio_fps.json
    python benchmarks/studio_fps.py --steps 500 --preset size1m --set train.precision=fp32
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reverie import Dreamer  # noqa: E402
from reverie.config import make_config  # noqa: E402
from reverie.dream import DreamEnv  # noqa: E402
from reverie.envs import Space  # noqa: E402
from reverie.studio.session import png_data_uri  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_FPS = 60.0
TRANSFORMER_TARGET_FPS = 20.0


def measure(preset: str, steps: int, overrides: list[str], warmup: int = 20) -> dict[str, Any]:
    """Frames/s of ``DreamEnv.step`` (and with PNG encoding) for an untrained ``preset`` pixel model."""
    torch.set_num_threads(1)
    cfg = make_config([preset], ["env.id=crafter", "train.device=cpu", "train.threads=1", *overrides])
    agent = Dreamer(cfg, {"image": Space(np.uint8, (64, 64, 3), 0, 255)}, Space(np.int64, (), 0, 17, discrete=True))
    env = DreamEnv(agent, seed=0, real_env=False, max_steps=10**9)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 17, steps + warmup)
    for a in actions[:warmup]:
        env.step(int(a))
    start = time.perf_counter()
    for a in actions[warmup:]:
        env.step(int(a))
    step_s = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for a in actions[warmup:]:
        png_data_uri(env.step(int(a))[0])
    png_s = (time.perf_counter() - start) / steps
    return {
        "fps": round(1.0 / step_s, 1),
        "fps_with_png": round(1.0 / png_s, 1),
        "model": f"{preset} {agent.config.model.kind}, untrained, 64x64x3 image, 17 discrete actions",
        "params": sum(p.numel() for p in agent.learner.parameters()),
        "world_model_params": sum(p.numel() for p in agent.learner.wm.parameters()),
        "precision": agent.learner.act_precision,
        "compiled": agent.config.train.compile,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "target_fps": TARGET_FPS,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="size12m", help="model size preset")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. train.precision=fp32")
    parser.add_argument("--steps", type=int, default=300, help="timed steps")
    parser.add_argument("--out", default=str(RESULTS / "studio_fps.json"))
    args = parser.parse_args()
    result = measure(args.preset, args.steps, args.set)
    result["transformer"] = measure(args.preset, args.steps, [*args.set, "model.kind=transformer"])
    result["transformer"]["target_fps"] = TRANSFORMER_TARGET_FPS
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    if result["fps"] < TARGET_FPS:
        raise SystemExit(f"{result['fps']} frames/s is below the target of {TARGET_FPS}")
    if result["transformer"]["fps"] < TRANSFORMER_TARGET_FPS:
        raise SystemExit(f"the transformer's {result['transformer']['fps']} frames/s is below {TRANSFORMER_TARGET_FPS}")


if __name__ == "__main__":
    main()
