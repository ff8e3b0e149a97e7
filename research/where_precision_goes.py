"""Where does a CartPole model lose how far out the cart and pole are: in the encoder or in the latent?

For a run's replay, fits the same small readout (an MLP, 2,000 Adam steps) from three inputs: the symlog
observation itself, the encoder's output (the embedding the posterior reads) and the posterior features (what the
heads and the decoder read), to (a) the cart position and pole angle and (b) whether the step ended the episode.
Scored on the episodes left out (every fifth): median error of x by distance from the centre, of the angle near
its limit, and the ending classifier's AUROC and its median output at the real endings.

    python research/where_precision_goes.py /tmp/ves/base-1 /tmp/ves/nonorm-0
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

from reverie.agent import Dreamer
from reverie.correction import auroc
from reverie.functional import sample_onehot, symlog

sys.path.append(str(Path(__file__).resolve().parent))


def replay(wm: torch.nn.Module, run: str, prior: bool = False) -> dict[str, np.ndarray]:
    """The run's replay through ``wm``; ``prior``: also the features with a sample of the prior at each step."""
    out: dict[str, list] = {"obs": [], "embed": [], "feat": [], "prior_feat": [], "end": [], "episode": []}
    for i, path in enumerate(sorted(glob.glob(f"{run}/replay/**/*.npz", recursive=True))):
        data = np.load(path)
        batch = {k: torch.as_tensor(data[k])[None] for k in ("vector", "action", "is_first")}
        batch = {k: v.float() if k != "is_first" else v for k, v in batch.items()}
        with torch.no_grad():
            embed = wm.encoder({"vector": batch["vector"]})
            states, _, prior_logits = wm.observe(batch, embed=embed)
            out["feat"].append(wm.feat(states)[0].float().numpy())
            if prior:  # the prior's guess at each step (drawing it moves the random stream)
                dreamt = {"deter": states["deter"], "stoch": sample_onehot(prior_logits)}
                out["prior_feat"].append(wm.feat(dreamt)[0].float().numpy())
        out["embed"].append(embed[0].float().numpy())
        out["obs"].append(data["vector"])
        out["end"].append(data["is_terminal"] > 0)
        out["episode"].append(np.full(len(data["vector"]), i))
    return {k: np.concatenate(v) for k, v in out.items() if v}


def fit(x: np.ndarray, y: np.ndarray, train: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """An MLP readout fitted on the ``train`` rows; its predictions for all rows."""
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    mu, sd = xt[train].mean(0), xt[train].std(0) + 1e-6
    xt = (xt - mu) / sd
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 256), torch.nn.SiLU(), torch.nn.Linear(256, 256), torch.nn.SiLU(),
        torch.nn.Linear(256, y.shape[1]),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rows = np.flatnonzero(train)
    for _ in range(2000):
        idx = torch.as_tensor(np.random.default_rng(_).choice(rows, 512))
        pred = net(xt[idx])
        if kind == "end":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, yt[idx])
        else:
            loss = ((pred - yt[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(xt)
    return torch.sigmoid(pred).numpy() if kind == "end" else pred.numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    for run in args.runs:
        if "nonorm" in Path(run).name:  # a run of vector_encoder_scale.py --variant nonorm
            from vector_encoder_scale import use_unnormed_encoder

            use_unnormed_encoder()
        wm = Dreamer.load(run).learner.wm
        d = replay(wm, run)
        test = d["episode"] % 5 == 0
        obs, end = d["obs"], d["end"]
        ax, ath = np.abs(obs[:, 0]), np.abs(obs[:, 2])
        row: dict = {"run": run, "steps": len(obs), "endings": int(end.sum())}
        inputs = {"obs": symlog(torch.as_tensor(obs)).numpy(), "embed": d["embed"], "feat": d["feat"]}
        for name, x in inputs.items():
            pos = fit(x, obs[:, [0, 2]], ~test, "pos")
            err = {}
            for lo, hi in [(0, 1), (1.5, 2.0), (2.0, 2.4), (2.4, 9)]:
                m = test & (ax >= lo) & (ax < hi)
                if m.any():
                    err[f"x {lo}-{hi}"] = round(float(np.median(np.abs(pos[m, 0] - obs[m, 0]))), 3)
            for lo, hi in [(0, 0.1), (0.15, 0.21), (0.21, 9)]:
                m = test & (ath >= lo) & (ath < hi)
                if m.any():
                    err[f"angle {lo}-{hi}"] = round(float(np.median(np.abs(pos[m, 1] - obs[m, 2]))), 4)
            p = fit(x, end[:, None].astype(np.float32), ~test, "end")[:, 0]
            row[name] = {
                **err,
                "ending_auroc": round(float(auroc(p[test], end[test])), 3),
                "p_end_at_endings": round(float(np.median(p[test & end])), 3),
                "p_end_elsewhere_max_q999": round(float(np.quantile(p[test & ~end], 0.999)), 3),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
