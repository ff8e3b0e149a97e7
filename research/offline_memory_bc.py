"""Does memory help behaviour cloning on Crafter? BC on raw observations with and without a recurrent state.

The scripted player that records the offline datasets (46.4 Crafter score) plans over a memory of the map it
has seen; a policy on the present observation alone (raw-observation BC, the (a) of ``offline_crafter.py``,
~8-12) has none, and the world model's recurrent state did not help a head that reads the observation
(``offline_diagnosis.py``). This probe asks the question directly, on the same recordings, seeds and
evaluation: ``mlp`` is :class:`reverie.baselines.BCPolicy`; ``gru`` is the same MLP on the observation with a
GRU over the episode's observations beside it (trained on windows of ``--window`` steps after a burn-in of
``--burn-in`` steps without loss, carried across the whole episode when playing). Neither reads past actions
(behaviour cloning with the action history learns to copy the last action).

Writes ``research/results/offline_memory_bc.json``.

    python research/offline_memory_bc.py --data research/runs/offline_crafter/data/symbolic-200-a1-curious
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


def fit_gru(data: Any, seed: int, steps: int, window: int, burn_in: int, batch: int, units: int) -> Any:
    """Train the recurrent cloner; returns ``(net, metrics)``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from reverie.functional import symlog
    from reverie.nets import MLP

    class Net(nn.Module):
        def __init__(self, obs_dim: int, n: int) -> None:
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(obs_dim, units), nn.SiLU())
            self.gru = nn.GRU(units, units, batch_first=True)
            self.head = MLP(obs_dim + units, units, 2, out=n)

        def forward(self, obs: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            x = symlog(obs)  # (B, T, D)
            mem, h = self.gru(self.embed(x), h)
            return self.head(torch.cat([x, mem], -1)), h

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    episodes = [data.episode(i) for i in range(len(data)) if data.episode_info(i)["has_actions"]]
    obs = [torch.as_tensor(e["vector"][:-1]) for e in episodes]  # observation t -> action t + 1
    act = [torch.as_tensor(e["action"][1:]).long() for e in episodes]
    net = Net(obs[0].shape[-1], data.act_space["action"].n)
    opt = torch.optim.Adam(net.parameters(), 3e-4)
    span = window + burn_in
    recent: list[float] = []
    for _ in range(steps):
        xs, ys, masks = [], [], []
        for i in rng.integers(0, len(obs), batch):
            start = int(rng.integers(-burn_in, max(1, len(obs[i]) - window)))  # a window may begin at the start
            lo = max(0, start)
            x, y = obs[i][lo : start + span], act[i][lo : start + span]
            pad = span - len(x)  # windows at the episode's start have less burn-in, at its end fewer steps
            keep = torch.arange(lo, lo + len(x)) >= start + burn_in
            xs.append(F.pad(x, (0, 0, 0, pad)))
            ys.append(F.pad(y, (0, pad)))
            masks.append(F.pad(keep, (0, pad)))
        logits, _ = net(torch.stack(xs), None)
        mask = torch.stack(masks)
        loss = F.cross_entropy(logits[mask], torch.stack(ys)[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append((logits[mask].argmax(-1) == torch.stack(ys)[mask]).float().mean().item())
    return net, {"bc/accuracy": float(np.mean(recent[-100:]))}


def evaluate_gru(net: Any, env_id: str, episodes: int, seed: int, limit: int) -> dict[str, float]:
    import torch

    from reverie.config import EnvConfig
    from reverie.envs import make_batch_env
    from reverie.evaluation import run_episodes

    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor | None] = {"h": None}

    @torch.no_grad()
    def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        h = state["h"]
        if h is not None:
            h = h * torch.as_tensor(~first, dtype=torch.float32)[None, :, None]  # a new episode forgets
        logits, state["h"] = net(torch.as_tensor(obs["vector"])[:, None], h)
        return torch.multinomial(logits[:, 0].softmax(-1), 1, generator=gen)[:, 0].numpy().astype(np.int64)

    envs = make_batch_env(EnvConfig(id=env_id, num_envs=episodes, parallel=False, time_limit=limit), seed)
    try:
        return run_episodes(envs, act_fn, episodes).metrics("eval", env_id)
    finally:
        envs.close()


def run(job: dict[str, Any]) -> dict[str, Any]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie.baselines import BCPolicy
    from reverie.data import Dataset

    data = Dataset(job["data"])
    seed, start = job["seed"], time.time()
    eval_seed = 100_000 + 1000 * seed  # the evaluation seeds of offline_crafter.py
    if job["kind"] == "mlp":
        policy = BCPolicy(data.obs_space, data.act_space["action"], seed=seed)
        fit = policy.fit(data, steps=job["steps"])
        metrics = policy.evaluate("crafter-symbolic", job["episodes"], eval_seed, job["limit"])
    else:
        net, fit = fit_gru(data, seed, job["steps"], job["window"], job["burn_in"], job["batch"], 256)
        metrics = evaluate_gru(net, "crafter-symbolic", job["episodes"], eval_seed, job["limit"])
    success = {k.removeprefix("eval/success/"): v for k, v in metrics.items() if k.startswith("eval/success/")}
    return {
        **job,
        "score": metrics["eval/score"],
        "return": metrics["eval/return"],
        "accuracy": fit["bc/accuracy"],
        "success": success,
        "wall_s": time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a recorded crafter-symbolic dataset")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["mlp", "gru"], choices=["mlp", "gru"])
    parser.add_argument("--steps", type=int, default=3000, help="gradient steps of each cloner")
    parser.add_argument("--window", type=int, default=64, help="gru: steps per training window with a loss")
    parser.add_argument("--burn-in", type=int, default=64, help="gru: steps before the window, no loss")
    parser.add_argument("--batch", type=int, default=8, help="gru: windows per step (the MLP takes 256 pairs)")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--time-limit", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="offline_memory_bc.json")
    args = parser.parse_args()
    if not (args.data / "dataset.json").exists():
        parser.error(f"--data {args.data} is not a dataset folder; record one with offline_crafter.py first")
    common = {"data": str(args.data), "steps": args.steps, "episodes": args.episodes, "limit": args.time_limit}
    common |= {"window": args.window, "burn_in": args.burn_in, "batch": args.batch}
    jobs = [{**common, "kind": k, "seed": s} for s in args.seeds for k in args.kinds]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run, jobs))
    out: dict[str, Any] = {"settings": {**common, "seeds": args.seeds}}
    for kind in args.kinds:
        mine = [r for r in rows if r["kind"] == kind]
        out[kind] = {key: [r[key] for r in mine] for key in ("score", "return", "accuracy", "wall_s")}
        out[kind]["success"] = {name: [r["success"][name] for r in mine] for name in mine[0]["success"]}
        print(kind, "score", [round(s, 2) for s in out[kind]["score"]], "accuracy", out[kind]["accuracy"])
    from reverie.fileio import write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
