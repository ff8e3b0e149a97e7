"""How fast does the transformer's dynamics learn CartPole, apart from the agent and the moving tokenizer?

A transformer agent (``classic cartpole`` presets) collects 2,500 random steps and trains its world model for
``--model-updates`` updates, which fixes a tokenizer. A fresh ``ShortcutDynamics`` of width ``--width`` is then trained
with shortcut forcing on that tokenizer's latents (the replay's windows) for ``--updates`` updates, with the project's
optimiser (``laprop``) or Adam at ``--lr``; ``--slot-scale`` rescales the token-position embeddings at creation;
``--token-only`` gives the action only its own token (as first built, not added to every noised token);
``--residual`` predicts the next latents as the last frame's plus the output.
Every 100 updates it prints the squared error of the finest step's x-prediction of the next frame at signal levels 0
and 0.94, with the recorded actions and with the other action, beside the error of copying the previous frame.

    python research/transformer_dynamics.py --width 128 --lr 3e-4 --optimizer laprop
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import torch
from torch import Tensor

from reverie import Dreamer, make_config
from reverie.optim import make_optimizer
from reverie.transformer import ShortcutDynamics


def previous(z: Tensor, seg: Tensor) -> Tensor:
    """Each frame's previous latents in its episode (zeros at a start)."""
    shifted = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
    same = torch.cat([torch.zeros_like(seg[:, :1]), (seg[:, 1:] == seg[:, :-1]).long()], 1)
    return shifted * same[..., None, None].to(z.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-updates", type=int, default=600)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--optimizer", choices=["laprop", "adam"], default="laprop")
    parser.add_argument("--slot-scale", type=float, default=0.0, help="std of the position embeddings (0: as built)")
    parser.add_argument("--token-only", action="store_true", help="the action as its own token only (as first built)")
    parser.add_argument("--residual", action="store_true", help="predict the next latents as the last ones + output")
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="transformer-dynamics-")
    over = ["model.kind=transformer", "train.steps=2500", f"run.logdir={folder}", "run.eval_episodes=0"]
    agent = Dreamer(make_config(["classic", "cartpole"], [*over, "run.progress=false"]))
    agent.learn()
    learner, wm = agent.learner, agent.learner.wm
    for _ in range(args.model_updates):
        learner.update(agent.replay.sample(16, 32), "model")

    if args.token_only:
        plain = ShortcutDynamics._noised_tokens

        def noised(self, z, act, tau, d):  # type: ignore[no-untyped-def]
            return plain(self, z, act, tau, d) - act.unsqueeze(-2)

        ShortcutDynamics._noised_tokens = noised  # type: ignore[method-assign]
    if args.residual:
        plain_seq, plain_loss = ShortcutDynamics.denoise_seq, ShortcutDynamics.shortcut_loss

        def seq(self, zt, tau, d, act, kvs, seg):  # type: ignore[no-untyped-def]
            return plain_seq(self, zt, tau, d, act, kvs, seg) + self._prev

        def loss(self, z1, act, kvs, seg):  # type: ignore[no-untyped-def]
            self._prev = previous(z1, seg)
            return plain_loss(self, z1, act, kvs, seg)

        ShortcutDynamics.denoise_seq, ShortcutDynamics.shortcut_loss = seq, loss  # type: ignore[method-assign]
    torch.manual_seed(1)
    dyn = ShortcutDynamics(dataclasses.replace(wm.cfg, units=args.width), learner.action_dim)
    if args.slot_scale:
        with torch.no_grad():
            for slots in (dyn.clean_slots, dyn.noised_slots):
                slots.mul_(args.slot_scale / slots.std())
    params = list(dyn.parameters())
    if args.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=args.lr)
    else:
        opt = make_optimizer([{"params": params, "lr": args.lr}], agent.config.optim)

    def data() -> tuple[Tensor, Tensor, Tensor]:
        batch = learner.sequences(agent.replay.sample(16, 32))
        with torch.no_grad():
            z = wm.tokenize({k: batch[k] for k in wm.obs_keys})
        keep = 1.0 - batch["is_first"].float().unsqueeze(-1)
        return z, batch["action"] * keep, torch.cumsum(batch["is_first"].long(), 1)

    for i in range(args.updates + 1):
        z, action, seg = data()
        act = dyn.embed_action(action)
        _, kvs = dyn.clean(z, act, seg)
        loss = dyn.shortcut_loss(z, act, kvs, seg).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 100:
            continue
        with torch.no_grad():
            z, action, seg = data()
            B, T = seg.shape
            line = [f"{i:4d} loss {loss.item():.4f}"]
            dyn._prev = previous(z, seg)
            other = (1 - action) * action.sum(-1, keepdim=True)  # the other one-hot action (none at a start)
            for name, chosen in (("recorded", action), ("other", other)):
                act = dyn.embed_action(chosen)
                _, kvs = dyn.clean(z, act, seg)
                for tau in (0.0, 0.9375):
                    zt = dyn._mix(z, torch.randn_like(z), torch.full((B, T), tau))
                    pred = dyn.denoise_seq(zt, torch.full((B, T), tau), torch.full((B, T), 1 / 16), act, kvs, seg)
                    line.append(f"{name}@{tau}: {(pred - z)[:, 1:].pow(2).mean().item():.4f}")
            line.append(f"copy: {(previous(z, seg) - z)[:, 1:].pow(2).mean().item():.4f}")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
