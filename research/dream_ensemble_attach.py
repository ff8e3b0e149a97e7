"""A latent ensemble fitted onto a checkpoint after the fact: does its doubt flag the real endings a dream-trained
learner runs into (issue 42, part 2)? The members learn from the model's detached features, so fitting them later
gives what training with them would have; this script fits them with its own Adam (1e-3), every other weight kept.

Fits 5 members in 1,000 updates onto a classic CartPole checkpoint (trained without an ensemble), trains PPO 30k
steps in its dream (``end_unknown`` on by default now), watches 20 real episodes and reports the AUROC of the
ensemble's disagreement and the share of real endings flagged "unknown", beside the continuation head's.

    OMP_NUM_THREADS=1 python research/dream_ensemble_attach.py [RUN] [--seed 0]

Finding: see research/notes/dream_transfer.md ("An ensemble fitted after the fact").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
RUN = "benchmarks/runs/learning_classic/CartPole-v1/seed0-1796596233"


def add_ensemble(agent, data, members: int = 5, updates: int = 1000, seed: int = 0):
    """A copy of ``agent`` with a ``members`` latent ensemble fitted on ``updates`` batches of ``data``."""
    import copy
    import dataclasses

    from reverie.agent import Dreamer

    cfg = copy.deepcopy(agent.config)
    cfg.model.ensemble = members
    new = Dreamer(cfg, dict(agent.learner.obs_space), agent.learner.act_space)
    weights = {k: v for k, v in agent.learner.state_dict().items() if not k.startswith("wm.ensemble.")}
    missing, unexpected = new.learner.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("wm.ensemble.") for k in missing)
    new.state = dataclasses.replace(agent.state)
    learner, wm, t = new.learner, new.learner.wm, cfg.train
    torch.manual_seed(seed)
    opt = torch.optim.Adam(wm.ensemble.parameters(), lr=1e-3)
    for _ in range(updates):
        batch = learner.sequences(data.sample(t.batch_size, t.batch_length))
        with torch.no_grad():
            states, post, _ = wm.observe(batch)
            feat = wm.rssm.feat(states).float()
        mask = 1.0 - batch["is_first"][:, 1:].float()
        loss, _ = wm.ensemble.loss(feat[:, :-1], batch["action"][:, 1:], post[:, 1:].float().exp(), mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return new


def main() -> None:
    from reverie.agent import Dreamer
    from reverie.correction import exploit_report, run_replay, watch
    from reverie.dream import DreamEnv
    from reverie.learners import SB3Learner

    parser = argparse.ArgumentParser()
    parser.add_argument("run", nargs="?", default=RUN)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    agent = Dreamer.load(args.run)
    start = time.time()
    fitted = add_ensemble(agent, run_replay(args.run, agent.config, args.seed), members=5, updates=1000)
    fit_s = time.time() - start
    learner = SB3Learner(args.seed)
    env = DreamEnv(fitted, seed=args.seed)
    learner.learn(env, 30_000)
    results, checks, _, _ = watch(fitted, 20, 7919, policy=learner.act)
    report = exploit_report(checks)
    keys = (
        "endings",
        "missed_endings",
        "ending_cont",
        "ending_auroc",
        "ending_uncertainty_auroc",
        "ending_unknown_rate",
    )
    out = {
        "run": args.run,
        "fit_seconds": round(fit_s, 1),
        "threshold": float(fitted.learner.wm.ensemble.threshold),
        "real_return": float(results.returns.mean()),
        "unknown_steps": sum(c.unknown for c in checks) / len(checks),
        **{k: report[k] for k in keys},
    }
    print(json.dumps(out, indent=1))
    path = Path(__file__).parent / "results" / f"dream_ensemble_attach_seed{args.seed}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
