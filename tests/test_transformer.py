"""The transformer world model (``model.kind=transformer``): stepping one frame at a time with the key-value cache
computes what the training pass computes, shortcut sampling in 1-4 steps lands where many steps do on a trained
model, action-free recordings train it, dreams pass Gymnasium's checker, checkpoints rebuild it, and its config
errors are one line. (The contract over observation and action kinds runs over both kinds in ``test_agent.py``.)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from reverie import Dreamer, make_config
from reverie.config import ConfigError
from reverie.data import Dataset
from reverie.dream import DreamEnv
from reverie.envs import Space
from reverie.learner import Learner
from reverie.transformer import ShortcutDynamics, TransformerWorldModel

VECTOR = {"vector": Space(np.float32, (4,))}


def tiny_model(*overrides: str) -> TransformerWorldModel:
    cfg = make_config(["debug"], ["model.kind=transformer", "model.context=3", *overrides])
    wm = TransformerWorldModel(VECTOR, 2, cfg.model)
    return wm.eval()


def sequence(B: int = 3, T: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random vectors and one-hot actions, with an episode starting in the middle of row 0."""
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, 5] = True
    action = torch.nn.functional.one_hot(torch.randint(0, 2, (B, T), generator=g), 2).float()
    return {"vector": torch.randn(B, T, 4, generator=g), "action": action, "is_first": is_first}


def test_stepping_with_the_cache_matches_the_training_pass() -> None:
    """Filtering frame by frame (a sliding window of 3 frames, reset at an episode start) gives the features and
    caches that the parallel pass over the whole sequence gives, and a noised frame denoised against the cache gets
    the prediction the parallel pass makes for it."""
    torch.manual_seed(0)
    wm = tiny_model()
    batch = sequence()
    B, T = batch["is_first"].shape
    with torch.no_grad():
        states, z, _ = wm.observe(batch)
        state = wm.initial(B)
        for t in range(T):
            obs = {"vector": batch["vector"][:, t]}
            state = wm.filter_step(state, batch["action"][:, t], obs, batch["is_first"][:, t])
            assert torch.allclose(state["deter"], states["deter"][:, t], atol=1e-5), t
            assert torch.equal(state["valid"], states["valid"][:, t]), t
            seen = state["valid"].repeat_interleave(wm.dynamics.clean_len, 1).bool()  # slots holding a frame
            for key in ("k", "v"):
                assert torch.allclose(
                    state[key].transpose(1, 2)[seen], states[key][:, t].transpose(1, 2)[seen], atol=1e-5
                )
        assert states["valid"][0, 5].sum() == 1  # a new episode's first frame holds itself alone
        assert states["valid"][1, 5].sum() == 3

        # the noised stream: frame t of the parallel pass against the cache of frame t - 1
        dyn = wm.dynamics
        seg = torch.cumsum(batch["is_first"].long(), 1)
        keep = 1.0 - batch["is_first"].float().unsqueeze(-1)
        act = dyn.embed_action(batch["action"] * keep)
        _, kvs = dyn.clean(z, act, seg)
        zt = torch.randn_like(z)
        tau, d = torch.full((B, T), 0.25), torch.full((B, T), 0.5)
        parallel = dyn.denoise_seq(zt, tau, d, act, kvs, seg)
        for t in (3, 7):
            prev = {k: v[:, t - 1] for k, v in states.items()}
            one = dyn.denoise_step(prev, zt[:, t], tau[:, t], d[:, t], act[:, t])
            assert torch.allclose(one, parallel[:, t], atol=1e-5), t


def test_a_recorded_dream_is_the_context_filtered_then_stepped_with_the_recorded_actions() -> None:
    """``dream_recorded`` (what ``openloop`` and the scaling benchmark read) equals filtering the context and
    stepping the dream with the recorded actions under the same random draws: features and rewards."""
    wm = tiny_model()
    batch = sequence(T=8)
    batch["is_first"][0, 5] = False  # one episode per row: the dream starts after the context
    with torch.no_grad():
        torch.manual_seed(3)
        feats, rewards, pictured = wm.dream_recorded(batch, context=4)
        torch.manual_seed(3)
        states, _, _ = wm.observe({k: v[:, :4] for k, v in batch.items()})
        state = {k: v[:, -1] for k, v in states.items()}
        for t in range(4, 8):
            step = wm.step(state, batch["action"][:, t])
            state = step.state
            assert torch.allclose(feats[:, t - 4], step.feat, atol=1e-6), t
            assert torch.allclose(rewards[:, t - 4], step.reward, atol=1e-6), t
    assert feats.shape[:2] == rewards.shape == (3, 4) and pictured == {}


def test_the_dream_attends_only_to_its_window() -> None:
    """Each layer looks ``model.context`` frames back, so a frame further back than ``attn_blocks * context`` (2 * 3)
    frames does not change the features: the cache of each layer holds what that frame saw when it was new."""
    torch.manual_seed(1)
    wm = tiny_model()
    a, b = sequence(B=1, T=8, seed=2), sequence(B=1, T=8, seed=2)
    a["is_first"][:] = False
    a["is_first"][:, 0] = True
    b["is_first"][:] = a["is_first"]
    b["vector"][:, 0] = torch.randn(1, 4)  # frame 0: 6 frames before frame 6, 7 before frame 7
    with torch.no_grad():
        fa, fb = wm.observe(a)[0]["deter"], wm.observe(b)[0]["deter"]
    assert not torch.allclose(fa[:, 6], fb[:, 6])  # frame 6 still sees frame 0 through the first layer
    assert torch.allclose(fa[:, 7], fb[:, 7], atol=1e-6)


def test_few_shortcut_steps_land_where_many_steps_do() -> None:
    """On a model trained with shortcut forcing on a two-mode next frame (+pattern or -pattern, at random), the
    16-step sample lands on a mode (mean absolute distance < 0.2; latents in [-1, 1], the modes 1.4 apart) and 1, 2
    and 4 steps from the same noise land near it (< 0.25 for one step, < 0.15 for two and four; measured 0.17, 0.07,
    0.02); a model trained at the smallest step size alone lands one step halfway between the modes (0.53)."""
    cfg = make_config(["debug"], ["model.kind=transformer", "model.units=32", "model.tokens=2", "model.token_dim=4"])
    torch.manual_seed(0)
    pattern = torch.tensor([0.7, -0.7, 0.7, 0.7, -0.7, 0.7, -0.7, -0.7]).reshape(2, 4)
    B, T = 32, 6

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sign = torch.randint(0, 2, (B, T, 1, 1)).float() * 2 - 1
        z = sign * pattern
        return z, torch.zeros(B, T, cfg.model.units), torch.ones(B, T, dtype=torch.long)

    def trained(finest_only: bool) -> ShortcutDynamics:
        torch.manual_seed(0)
        dyn = ShortcutDynamics(cfg.model, 2)
        opt = torch.optim.Adam(dyn.parameters(), lr=3e-3)
        for _ in range(300):
            z, act, seg = batch()
            _, kvs = dyn.clean(z, act, seg)
            loss = _finest_loss(dyn, z, act, kvs, seg) if finest_only else dyn.shortcut_loss(z, act, kvs, seg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return dyn.eval()

    def samples(dyn: ShortcutDynamics, noise: torch.Tensor) -> dict[int, torch.Tensor]:
        z, act, seg = batch()
        with torch.no_grad():
            _, kvs = dyn.clean(z, act, seg)
            state = dyn.windows(kvs, seg)
            state = {k: v[:, 2] for k, v in state.items()}
            return {k: dyn.sample(state, act[:, 3], k, noise) for k in (1, 2, 4, 16)}

    noise = torch.randn(B, 2, 4, generator=torch.Generator().manual_seed(5))
    out = samples(trained(finest_only=False), noise)
    to_mode = torch.minimum((out[16] - pattern).abs().mean((1, 2)), (out[16] + pattern).abs().mean((1, 2)))
    assert to_mode.mean() < 0.2, to_mode
    for k, tolerance in ((1, 0.25), (2, 0.15), (4, 0.15)):
        gap = (out[k] - out[16]).abs().mean()
        assert gap < tolerance, (k, gap)
    plain = samples(trained(finest_only=True), noise)
    assert (plain[1] - plain[16]).abs().mean() > 0.4


def _finest_loss(
    dyn: ShortcutDynamics, z: torch.Tensor, act: torch.Tensor, kvs: Any, seg: torch.Tensor
) -> torch.Tensor:
    """Flow matching at the smallest step size only (no shortcut bootstrap): the contrast of the test above."""
    B, T = z.shape[:2]
    d = torch.full((B, T), 1.0 / 16)
    tau = torch.floor(torch.rand(B, T) * 16) / 16
    zt = dyn._mix(z, torch.randn_like(z), tau)
    return (dyn.denoise_seq(zt, tau, d, act, kvs, seg) - z).pow(2).mean()


def test_action_free_recordings_train_it(rule_data: Any, tmp_path: Path) -> None:
    """Episodes without action labels train the model through the learned no-action token."""
    ds: Dataset = rule_data.write(tmp_path / "rule", [False, False, True, False])
    cfg = make_config(
        ["offline", "debug"],
        [f"run.logdir={tmp_path / 'run'}", "run.eval_episodes=0", "model.kind=transformer", "model.ensemble=0"],
    )
    agent = Dreamer(cfg).fit(ds, steps=6)
    assert agent.state.offline_updates == 6
    assert agent.learner.wm.dynamics.no_action.abs().sum() > 0


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory: pytest.TempPathFactory, debug_config: Any) -> Path:
    folder = tmp_path_factory.mktemp("transformer")
    cfg = debug_config(folder, "env.id=CartPole-v1", "train.steps=80", "run.eval_episodes=1", "model.kind=transformer")
    Dreamer(cfg).learn()
    return folder


def test_dream_env_passes_the_checker_and_the_checkpoint_keeps_its_kind(transformer_run: Path) -> None:
    env = DreamEnv(str(transformer_run), seed=0)
    assert isinstance(env.agent.learner.wm, TransformerWorldModel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env)
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert obs in env.observation_space and np.isfinite(reward)
        if terminated or truncated:
            break
    loaded = Dreamer.load(str(transformer_run))
    assert loaded.config.model.kind == "transformer"
    assert isinstance(loaded.learner.wm, TransformerWorldModel)


def test_the_ensemble_predicts_the_next_frames_tokens_and_reports_its_doubt() -> None:
    """With ``model.ensemble`` the members learn each frame's latent tokens from the frame before and the action
    taken (squared error, episode starts left out, the world model untouched); a dreamed step reports their spread
    and its reward spread, zero when the members agree."""
    torch.manual_seed(0)
    wm = tiny_model("model.ensemble=3").train()
    assert wm.ensemble is not None and wm.ensemble.continuous == wm.latent_dim
    batch = sequence() | {"reward": torch.zeros(3, 9), "is_terminal": torch.zeros(3, 9, dtype=torch.bool)}
    total, states, metrics = wm.loss(batch)
    z = wm.tokenize({"vector": batch["vector"]}).detach()
    pred = wm.ensemble(wm.feat(states)[:, :-1].detach(), batch["action"][:, 1:])  # (K, B, T - 1, D)
    err = (pred - z[:, 1:].flatten(-2)).pow(2).sum(-1).mean(0)
    mask = ~batch["is_first"][:, 1:]  # row 0 starts an episode at step 5: that frame is no prediction
    torch.testing.assert_close(metrics["loss/ens"], err[mask].mean())
    assert float(metrics["wm/uncertainty_threshold"]) > 0  # the first batch calibrates it

    wm.zero_grad()
    feat = wm.feat(wm.loss(batch)[1])
    wm.ensemble.loss(feat[:, :-1], batch["action"][:, 1:], z[:, 1:].flatten(-2), mask.float())[0].backward()
    assert all(p.grad is None for p in wm.dynamics.parameters())  # inputs detached: it never moves the model
    assert all(p.grad is not None for p in wm.ensemble.parameters())

    wm.eval()
    with torch.no_grad():
        state = wm.step(wm.initial(4), torch.eye(2)[[0, 1, 0, 1]]).state
        action = torch.eye(2)[[1, 1, 0, 0]]
        torch.manual_seed(1)
        out = wm.step(state, action, uncertainty=True)
        want = wm.ensemble.spread(wm.ensemble(wm.feat(state), action))
        assert out.uncertainty is not None and out.reward_uncertainty is not None and out.unknown is not None
        torch.testing.assert_close(out.uncertainty, want)
        assert bool((out.uncertainty > 0).all())
        last = [m for m in wm.reward_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.normal_(0, 1.0)  # the reward head starts at zero: give it something to spread
        torch.manual_seed(1)
        assert bool((wm.step(state, action, uncertainty=True).reward_uncertainty > 0).all())
        for head in wm.ensemble.heads[1:]:
            head.load_state_dict(wm.ensemble.heads[0].state_dict())
        torch.manual_seed(1)
        agreed = wm.step(state, action, uncertainty=True)
        assert agreed.uncertainty is not None and agreed.reward_uncertainty is not None
        assert torch.allclose(agreed.uncertainty, torch.zeros(4))
        assert torch.allclose(agreed.reward_uncertainty, torch.zeros(4))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.units=24"], "multiple of 16"),
        (["model.sample_steps=3"], "model.sample_steps must be"),
        (["model.kind=gru"], "model.kind"),
    ],
)
def test_config_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make_config(["debug"], ["model.kind=transformer", *overrides])


def test_learner_updates_on_images() -> None:
    """A pixel model: the masked tokenizer and the dynamics learn in one update, every loss finite."""
    cfg = make_config(["debug"], ["model.kind=transformer", "env.id=CartPole-v1"])
    learner = Learner(cfg, {"image": Space(np.uint8, (16, 16, 3))}, Space(np.int64, (), 0, 2, discrete=True))
    rng = np.random.default_rng(0)
    B, T = 2, 6
    batch = {
        "image": rng.integers(0, 255, (B, T, 16, 16, 3)).astype(np.uint8),
        "action": rng.integers(0, 2, (B, T)),
        "reward": np.zeros((B, T), np.float32),
        "is_first": np.eye(1, T, dtype=bool).repeat(B, 0),
        "is_terminal": np.zeros((B, T), bool),
    }
    metrics = learner.update(batch, "online")
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["opt/skipped"] == 0.0 and metrics["loss/dyn"] > 0
