"""Does a fitted Crafter model's one-step action value improve its BC head when the agent acts on it?

`offline_advantage_probe.py --horizon 1` finds that the model's values of the 17 actions one step ahead
do point where the game's do (correlation 0.2-0.3, the model's best action the game's best in 35-88% of
the states where the actions differ), where over 15 steps they do not. This script asks whether that
signal is worth anything in play, at decision time, without any training: at every step the agent
filters the real observation, imagines each of the 17 actions one step ahead (``--samples`` latent
draws each) and reads the reward the model predicts for it, ``Q(a)``; it then samples its action from

    pi(a) ~ bc(a | obs) * exp(Q(a) / beta)

the policy that maximises ``E[Q] - beta * KL(pi || bc)``: the solution of one step of imagination RL
held to the BC prior by a KL of weight ``beta``, computed exactly instead of learned. ``beta = inf``
is the BC head itself. Every ``beta`` plays the same worlds (env seeds), so the comparison is paired.

Needs run folders of ``research/offline_crafter_tagged.py`` (symbolic). Writes
``research/results/offline_lookahead.json`` (``--out``).

    python research/offline_lookahead.py --runs \
        research/runs/offline_crafter/runs/symbolic_200_1_wm_curious_gate6k_s0 --betas inf 0.3 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from run_probes import check_runs

RESULTS = Path(__file__).parent / "results"
N_ACTIONS = 17


def play(run: Path, beta: float, episodes: int, samples: int, seed: int) -> dict[str, Any]:
    """Play ``episodes`` episodes with the head reweighted by the model's one-step action values."""
    import torch

    torch.manual_seed(seed)
    from reverie import Dreamer
    from reverie.crafter.score import ACHIEVEMENTS, LOG_PREFIX, achievement_table, crafter_score
    from reverie.crafter.env import CrafterEnv
    from reverie.offline import one_step_values

    agent = Dreamer.load(run)
    learner = agent.learner
    keys = sorted({*learner.wm.obs_keys, *learner.bc.obs_keys, "is_first"})
    logs, returns, qs, changed = [], [], [], 0
    steps = 0
    for episode in range(episodes):
        env = CrafterEnv(seed=seed + episode, symbolic=True, length=500)
        obs = env.step({"reset": True})
        state, total = None, 0.0
        while True:
            batch = {k: np.asarray(obs[k])[None] for k in keys}
            with torch.no_grad():
                latent = learner.filter(batch, state)
                feat = learner.wm.rssm.feat(latent)
                seen = learner.to_tensors({k: batch[k] for k in learner.bc.obs_keys}) if learner.bc.obs_keys else None
                with learner.autocast():
                    logits = learner.head_policy(learner.actor("bc"), feat, seen).logits[0].float()
                    if math.isfinite(beta):
                        now = {"vector": torch.as_tensor(batch["vector"], dtype=torch.float32)}
                        q = one_step_values(learner, latent, now, samples)[0]  # (17,): what one_step RL learns
                        qs.append(q.cpu().numpy())
                        new = logits.log_softmax(-1) + q / beta
                    else:
                        new = logits
                action = int(torch.distributions.Categorical(logits=new).sample())
                changed += int(action != int(logits.argmax()))
            onehot_taken = learner.encode_action(torch.tensor([action]))
            state = {"deter": latent["deter"].float(), "stoch": latent["stoch"].float(), "action": onehot_taken.float()}
            obs = env.step({"action": action})
            total += float(obs["reward"])
            steps += 1
            if obs["is_last"]:
                break
        logs.append({name[len(LOG_PREFIX) :]: int(obs[name]) for name in obs if name.startswith(LOG_PREFIX)})
        returns.append(total)
    rates = achievement_table(logs)
    q_all = np.array(qs) if qs else np.zeros((1, N_ACTIONS))
    return {
        "score": crafter_score(rates),
        "return": float(np.mean(returns)),
        "success": {k: rates[k] for k in ACHIEVEMENTS},
        "steps": steps,
        "q_mean": float(q_all.mean()),
        "q_spread_mean": float((q_all.max(1) - q_all.min(1)).mean()),
        "not_head_mode_share": changed / max(steps, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished offline_crafter.py run folders")
    parser.add_argument(
        "--betas", nargs="+", type=float, default=[math.inf, 1.0, 0.3], help="KL weights (inf: the head)"
    )
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--samples", type=int, default=4, help="latent draws per action")
    parser.add_argument("--seed", type=int, default=5000, help="first env seed (episode i plays seed + i)")
    parser.add_argument("--out", default="offline_lookahead.json")
    args = parser.parse_args()
    check_runs(parser, args.runs)
    import torch

    torch.set_num_threads(1)
    path = RESULTS / args.out
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "runs"}
    for run in args.runs:
        for beta in args.betas:
            start = time.time()
            out = play(run, beta, args.episodes, args.samples, args.seed) | {"wall_s": time.time() - start}
            results.setdefault(run.name, {})[str(beta)] = out
            print(
                f"{run.name} beta={beta}: score {out['score']:.2f} return {out['return']:.2f} "
                f"({out['wall_s'] / 60:.1f} min)",
                flush=True,
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(path)


if __name__ == "__main__":
    main()
