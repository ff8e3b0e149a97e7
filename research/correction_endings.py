"""Where the corrected dream's endings go wrong: on the real play it was fine-tuned on, or on the next policy's?

Runs one ``benchmarks/dream_transfer.py`` cell (default: CartPole-v1, sb3, seed 2) and, at each round after a
fine-tuning, scores the model's one-step continuation (the prior's, as the dream and the round's checks use it) on
all the real play it was just fine-tuned on: the mean at the real endings and the share of other steps it calls an
ending (cont < 0.5). Beside it, the same two figures on the round's new play (the cell's ``ending_cont`` and
``false_endings``). Needs the learning benchmark's checkpoints (``python benchmarks/learning_classic.py``).

    python research/correction_endings.py --env CartPole-v1 --learner sb3 --seed 2
    python research/correction_endings.py --checkpoint RUN --variant nonorm  # a vector_encoder_scale.py run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.append(str(Path(__file__).resolve().parent))  # after benchmarks/: research/ has its own dream_transfer.py

import dream_transfer  # noqa: E402

import reverie.correction as correction  # noqa: E402

SEEN: list[Any] = []  # the latest RealPlay: every real episode so far


class Capturing(correction.RealPlay):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        SEEN[:] = [self]


def prior_cont(agent: Any, episode: dict[str, np.ndarray]) -> np.ndarray:
    """The model's continuation for steps 1..T-1 of ``episode``, predicted from the step before and the action."""
    learner, wm = agent.learner, agent.learner.wm
    batch = learner.sequences({k: v[None] for k, v in episode.items() if k not in ("action_mask", "reward_mask")})
    with torch.no_grad(), learner.autocast(acting=True):
        states, _, _ = wm.observe(batch)
        before = {k: v[0, :-1] for k, v in states.items()}
        return wm.step(before, batch["action"][0, 1:]).cont.float().numpy()


def real_play_cont(agent: Any) -> tuple[list[float], list[float]]:
    """The model's continuation on every real step so far: at the endings, and on the steps that went on."""
    ends, others = [], []
    for ep in SEEN[0].episodes:
        cont = prior_cont(agent, ep)
        terminal = np.asarray(ep["is_terminal"][1:], bool)
        ends += list(cont[terminal])
        others += list(cont[~terminal])
    return ends, others


def score(agent: Any) -> dict[str, float]:
    if not SEEN:
        return {}
    ends, others = real_play_cont(agent)
    others_a = np.asarray(others)
    return {
        "trained_endings": len(ends),
        "trained_ending_cont": float(np.mean(ends)) if ends else float("nan"),
        "trained_false_rate": float((others_a < 0.5).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--learner", default="sb3")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--out", default="/tmp/dream_endings.json")
    parser.add_argument("--checkpoint", help="a run folder to use instead of the learning benchmark's")
    parser.add_argument("--variant", choices=["base", "nonorm"], default="base", help="see vector_encoder_scale.py")
    args = parser.parse_args()
    if args.checkpoint:
        dream_transfer.checkpoint_of = lambda env_id, seed: Path(args.checkpoint)  # type: ignore[assignment]
    if args.variant == "nonorm":  # the checkpoint was trained with the first encoder layer unnormed
        from vector_encoder_scale import use_unnormed_encoder

        use_unnormed_encoder()
    correction.RealPlay = Capturing  # type: ignore[misc]
    original = correction.correct
    rows: list[dict[str, Any]] = []

    def correct(agent: Any, *a: Any, on_round: Any = None, **kw: Any) -> Any:
        def hook(reports: list[dict[str, Any]]) -> None:
            r = reports[-1]
            new_steps = r["real_steps"] - (rows[-1]["real_steps"] if rows else 0)
            row = {"round": r["round"], "real_steps": r["real_steps"], **score(agent)}
            row |= {"new_ending_cont": r.get("ending_cont"), "new_endings": r.get("endings")}
            row |= {"new_false_rate": r.get("false_endings", 0) / max(new_steps, 1), "real_return": r["real_return"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if on_round is not None:
                on_round(reports)

        return original(agent, *a, on_round=hook, **kw)

    correction.correct = correct
    torch.set_num_threads(1)
    out = Path(args.out)
    dream_transfer.run_cell(args.env, args.learner, args.seed, 3, 20, out.with_suffix(".cell.json"))
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
