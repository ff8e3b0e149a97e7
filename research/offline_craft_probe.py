"""What a fitted Crafter world model predicts for craft and place presses that fail.

The scripted player's own choices never include a ``place_*`` or ``make_*`` action the game would
ignore, so a model fitted on its recordings has never seen one fail. This probe plays recorded presses
through fitted models, on held-out episodes of the ``scripted-curious`` player (which presses random
craft and place actions now and then, mostly in vain): for each press, the model filters the episode up
to the step before it, takes the recorded action, and predicts the reward of the next step (a latent
sampled from the prior, as in imagination). Presses are split into

* ``failed``: the game ignored the press (the achievement count did not move); the real reward is ~0;
* ``unlocked``: the press took effect and unlocked an achievement (real reward ~1);
* ``repeated``: it took effect but unlocked nothing new.

A model that knows what each action needs predicts ~0 for ``failed``; one that learned "crafting pays"
predicts ~1, and imagination RL can then buy reward with presses that do nothing in the real game.

Needs run folders of ``research/offline_crafter_tagged.py`` (symbolic). Records the held-out episodes once
(seed 1000, not a seed any dataset here was recorded with). Writes
``research/results/offline_craft_probe.json``.

    python research/offline_craft_probe.py --runs \\
        research/runs/offline_crafter/runs/symbolic_200_1_wm_obsonly_s0 \\
        research/runs/offline_crafter/runs/symbolic_200_1_wm_curious_s0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from run_probes import check_runs, held_out

RESULTS = Path(__file__).parent / "results"
HELD_OUT = Path(__file__).parent / "runs" / "offline_crafter" / "data" / "symbolic-heldout-curious"


def probe(run: Path, data: Any) -> dict[str, Any]:
    """Predicted next-step reward of every recorded craft or place press in ``data``, by outcome."""
    import torch

    torch.manual_seed(0)
    from reverie import Dreamer
    from reverie.crafter.score import LOG_PREFIX
    from reverie.crafter.scripted import ACTIONS

    agent = Dreamer.load(run)
    learner, cfg = agent.learner, agent.config.model
    groups: dict[str, list[float]] = {"failed": [], "unlocked": [], "repeated": []}
    for i in range(len(data)):
        episode = data.episode(i)
        feat = torch.as_tensor(agent.encode(episode))  # (T, F) posterior features
        action = learner.to_tensors({"action": episode["action"][None]})["action"][0]
        shape = (len(feat) - 1, cfg.stoch, cfg.classes)
        before = {"deter": feat[:-1, : cfg.deter], "stoch": feat[:-1, cfg.deter :].reshape(shape)}
        with torch.no_grad():  # the state at t - 1 takes the action recorded at t, as in imagination
            following = learner.wm.rssm.imagine_step(before, action[1:])
            predicted = learner.wm.reward(learner.wm.rssm.feat(following)).float().numpy().reshape(-1)
        names = [ACTIONS[int(a)] for a in episode["action"]]
        for t in range(1, len(names)):
            if not names[t].startswith(("make_", "place_")):
                continue
            counts = episode[LOG_PREFIX + names[t]]
            kind = "failed" if counts[t] == counts[t - 1] else "unlocked" if episode["reward"][t] > 0.5 else "repeated"
            groups[kind].append(float(predicted[t - 1]))
    return {
        kind: {
            "presses": len(values),
            "mean_predicted_reward": float(np.mean(values)) if values else None,
            "share_above_0.5": float(np.mean(np.asarray(values) > 0.5)) if values else None,
        }
        for kind, values in groups.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of offline_crafter.py")
    parser.add_argument("--episodes", type=int, default=40, help="held-out curious episodes to record")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from reverie.fileio import write_text

    check_runs(parser, args.runs)
    data = held_out(HELD_OUT, "scripted-curious", args.episodes, seed=1000)
    out: dict[str, Any] = {"held_out_episodes": len(data), "runs": {}}
    for run in args.runs:
        out["runs"][run.name] = probe(run, data)
        print(run.name, json.dumps(out["runs"][run.name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "offline_craft_probe.json", json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
