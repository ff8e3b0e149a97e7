"""Integration tests of ``Dreamer``: the contract over observation and action kinds, persistence,
reproducibility, errors, replay on disk and batches with missing labels.

Every run uses the ``debug`` preset and a few dozen updates, so the whole module takes seconds.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from reverie import Dreamer
from reverie.checkpoint import CheckpointError
from reverie.config import Config, ConfigError, make_config, set_key
from reverie.envs import EnvError, GymEnv
from reverie.logger import read_jsonl
from reverie.replay import Replay

# ---------------------------------------------------------------------------------------------------
# A tiny task in four flavours: {vector, image} observations x {discrete, continuous} actions.


class ReachEnv(gymnasium.Env):
    """Move a point on [-1, 1] to a random target within ``length`` steps.

    Reaching the target (closer than 0.25) terminates the episode with reward 1; otherwise each step
    costs the distance and the episode is truncated after ``length`` steps. So random play sees
    ``is_first``, ``is_last`` and ``is_terminal`` within a hundred steps.

    Observations: ``[position, target, target - position, time]`` (float32, shape (4,)) or a uint8
    64x64x3 image with the position in the red and the target in the green channel.
    Actions: Discrete(3) (left, stay, right) or Box(-1, 1, (2,)) (the first entry is the move).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, image: bool = False, continuous: bool = False, length: int = 20):
        self.image, self.continuous, self.length = image, continuous, length
        if image:
            self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        else:
            self.observation_space = spaces.Box(-2.0, 2.0, (4,), np.float32)
        if continuous:
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            self.action_space = spaces.Discrete(3)
        self.pos = self.target = 0.0
        self.t = 0

    def _obs(self) -> np.ndarray:
        if not self.image:
            return np.array([self.pos, self.target, self.target - self.pos, self.t / self.length], np.float32)
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[:, int(round((self.pos + 1) * 31.5)), 0] = 255
        frame[:, int(round((self.target + 1) * 31.5)), 1] = 255
        return frame

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos, self.t = 0.0, 0
        self.target = float(self.np_random.uniform(-0.6, 0.6))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = 0.2 * float(np.clip(action[0], -1, 1)) if self.continuous else 0.2 * (int(action) - 1)
        self.pos = float(np.clip(self.pos + move, -1.0, 1.0))
        self.t += 1
        dist = abs(self.target - self.pos)
        terminated = dist < 0.25
        reward = 1.0 if terminated else -dist
        return self._obs(), reward, terminated, self.t >= self.length, {}


ENV_IDS = {
    ("vector", "discrete"): "ReverieTest/ReachVector-v0",
    ("vector", "continuous"): "ReverieTest/ReachVectorCont-v0",
    ("image", "discrete"): "ReverieTest/ReachImage-v0",
    ("image", "continuous"): "ReverieTest/ReachImageCont-v0",
}
for (_obs_kind, _act_kind), _env_id in ENV_IDS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(
            id=_env_id,
            entry_point=ReachEnv,
            kwargs={"image": _obs_kind == "image", "continuous": _act_kind == "continuous"},
        )


# ---------------------------------------------------------------------------------------------------
# Helpers


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Nested dicts / lists of tensors and numbers are exactly equal (tensors: dtype, shape and values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: {type(b)} is no tensor"
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        )
        assert torch.equal(a.cpu(), b.cpu()), f"{where}: values differ"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def replay_flags(directory: Path) -> dict[str, np.ndarray]:
    """``is_first`` / ``is_last`` / ``is_terminal`` of every step stored in a replay folder."""
    files = sorted(directory.glob("*.npz"))
    assert files, f"no replay files in {directory}"
    out: dict[str, list[np.ndarray]] = {"is_first": [], "is_last": [], "is_terminal": []}
    for path in files:
        with np.load(path, allow_pickle=False) as npz:
            for key in out:
                out[key].append(npz[key])
    return {key: np.concatenate(parts) for key, parts in out.items()}


def loss_rows(logdir: Path) -> list[dict[str, float]]:
    """The ``train/loss/*`` values of each metrics row that has them, with the row's step."""
    rows = read_jsonl(logdir / "metrics.jsonl")
    losses = [{k: v for k, v in row.items() if k == "step" or k.startswith("train/loss/")} for row in rows]
    return [row for row in losses if len(row) > 1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, debug_config: Any) -> Dreamer:
    """A CartPole agent after 100 env steps (37 updates), saved to its run folder. Tests must not change it."""
    logdir = tmp_path_factory.mktemp("trained")
    return Dreamer(debug_config(logdir, "train.steps=100")).learn()


# ---------------------------------------------------------------------------------------------------
# 1. The contract, over {vector, image} x {discrete, continuous}


@pytest.mark.parametrize("kind", ["rssm", "transformer"])
@pytest.mark.parametrize("act_kind", ["discrete", "continuous"])
@pytest.mark.parametrize("obs_kind", ["vector", "image"])
def test_contract(obs_kind: str, act_kind: str, kind: str, tmp_path: Path, debug_config: Any) -> None:
    env_id = ENV_IDS[obs_kind, act_kind]
    agent = Dreamer(debug_config(tmp_path, f"env.id={env_id}", "train.steps=96", f"model.kind={kind}")).learn()
    assert agent.state.env_steps == 96
    assert agent.state.updates > 0
    assert list(agent.learner.obs_space) == [obs_kind]
    assert agent.learner.act_space.discrete == (act_kind == "discrete")

    # The training data crossed episode boundaries of every kind.
    flags = replay_flags(tmp_path / "replay")
    assert len(flags["is_first"]) == 96
    assert flags["is_first"].sum() >= 2 and flags["is_last"].sum() >= 1 and flags["is_terminal"].sum() >= 1
    assert not (flags["is_terminal"] & ~flags["is_last"]).any(), "a terminal step must also be last"

    # Train metrics were logged and are finite.
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    train = {k: v for row in rows for k, v in row.items() if k.startswith("train/")}
    for key in ("dyn", "rec", "rew", "con", "actor", "critic", "repval", *(["rep"] if kind == "rssm" else [])):
        assert f"train/loss/{key}" in train
    bad = {k: v for row in rows for k, v in row.items() if k.startswith("train/") and not math.isfinite(v)}
    assert not bad, f"non-finite train metrics: {bad}"

    # predict: one observation gives one action; a batch gives a batch; all inside the action space.
    env = gymnasium.make(env_id)
    try:
        raws = [env.reset(seed=s)[0] for s in range(3)]
        action, state = agent.predict({obs_kind: raws[0]})
        assert np.shape(action) == env.action_space.shape
        assert env.action_space.contains(action), action
        action, _ = agent.predict({obs_kind: raws[1], "is_first": False}, state, deterministic=True)
        assert env.action_space.contains(action), action
        env.step(action)
        actions, _ = agent.predict({obs_kind: np.stack(raws), "is_first": np.ones(3, bool)})
        assert actions.shape == (3, *env.action_space.shape)
        assert all(env.action_space.contains(a) for a in actions), actions
    finally:
        env.close()

    metrics = agent.evaluate(episodes=2)
    assert math.isfinite(metrics["eval/return"])
    assert 1 <= metrics["eval/length"] <= 20


def test_predict_batch_without_is_first(trained: Dreamer) -> None:
    """A batch of N observations without ``is_first`` starts N fresh states, as one observation does."""
    obs = {"vector": np.zeros((3, 4), np.float32)}
    actions, state = trained.predict(obs)
    assert actions.shape == (3,)
    assert state["deter"].shape[0] == 3


# ---------------------------------------------------------------------------------------------------
# 2. save -> load -> identical actions


def test_save_load_identical(trained: Dreamer, tmp_path: Path) -> None:
    path = trained.save(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "meta.json", "state.pt"]
    raw = torch.load(path / "state.pt", map_location=trained.learner.device, weights_only=True)
    # (the optimiser's step counters stay on the CPU in a live optimiser, whatever the device)
    assert_same(raw, trained.state_dict())

    loaded = Dreamer.load(path)
    assert_same(loaded.state_dict(), trained.state_dict())
    assert loaded.state == trained.state
    assert loaded.config.to_dict() == trained.config.to_dict()

    env = GymEnv("CartPole-v1", seed=3)
    observations, obs = [], env.step({"action": 0, "reset": True})
    for t in range(40):  # crosses at least one reset: random CartPole episodes last ~20 steps
        observations.append(obs)
        obs = env.step({"action": t % 2 if t % 7 else 0, "reset": obs["is_last"]})
    env.close()
    assert sum(bool(o["is_first"]) for o in observations) >= 2

    def rollout(agent: Dreamer) -> tuple[list[Any], list[torch.Tensor]]:
        torch.manual_seed(123)  # the posterior latent is sampled even when the action is the mode
        state, actions, deters = None, [], []
        for o in observations:
            action, state = agent.predict(o, state, deterministic=True)
            actions.append(action.item())
            deters.append(state["deter"])
        return actions, deters

    actions_a, deters_a = rollout(trained)
    actions_b, deters_b = rollout(loaded)
    assert actions_a == actions_b
    assert_same(deters_a, deters_b, "deter")


# ---------------------------------------------------------------------------------------------------
# 3. Two seeded runs -> identical losses


def test_seeded_runs_identical(tmp_path: Path, debug_config: Any) -> None:
    def losses(name: str, seed: int) -> list[dict[str, float]]:
        logdir = tmp_path / name
        Dreamer(debug_config(logdir, "train.steps=96", "run.log_every=16", f"train.seed={seed}")).learn()
        return loss_rows(logdir)

    first, again, other = losses("a", 0), losses("b", 0), losses("c", 1)
    assert len(first) >= 2, first  # rows at steps 80 and 96
    assert first == again
    values = [{k: v for k, v in row.items() if k != "step"} for row in first]
    other_values = [{k: v for k, v in row.items() if k != "step"} for row in other]
    assert len(other_values) == len(values)
    for a, b in zip(values, other_values, strict=True):  # (the KL terms may both sit at the free-nats floor)
        assert a["train/loss/rec"] != b["train/loss/rec"] and a["train/loss/actor"] != b["train/loss/actor"]


# ---------------------------------------------------------------------------------------------------
# 4. Errors: one line, naming the fix


@pytest.mark.parametrize(
    ("presets", "overrides", "needle"),
    [
        ([], ["train.bach_size=3"], "train.batch_size"),
        ([], ["train.batch_size=abc"], "train.batch_size"),
        (["debgu"], [], "debug"),
        ([], ["train.batch_length=1"], "train.batch_length"),
    ],
    ids=["unknown-key", "wrong-type", "unknown-preset", "bad-value"],
)
def test_config_errors(presets: list[str], overrides: list[str], needle: str, one_line: Any) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(presets, overrides)
    one_line(str(err.value), needle)


def test_unknown_env_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_line: Any) -> None:
    monkeypatch.chdir(tmp_path)  # the default run.logdir is relative
    with pytest.raises(EnvError) as err:
        Dreamer(make_config([], ["env.id=CartPol-v1"])).learn()
    one_line(str(err.value), "CartPol-v1", "CartPole-v1")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_checkpoint(damage: str, trained: Dreamer, tmp_path: Path, one_line: Any) -> None:
    ckpt = shutil.copytree(trained.logdir / "checkpoint", tmp_path / "ckpt")
    state = ckpt / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage bytes\xff" * 64)
    with pytest.raises(CheckpointError) as err:
        Dreamer.load(ckpt)
    one_line(str(err.value), str(state))


def test_missing_checkpoint(tmp_path: Path, one_line: Any) -> None:
    with pytest.raises(CheckpointError) as err:
        Dreamer.load(tmp_path / "nowhere")
    one_line(str(err.value), str(tmp_path / "nowhere"), "meta.json")


def test_checkpoint_does_not_fit_config(trained: Dreamer, one_line: Any) -> None:
    wider = make_config(["debug"], ["model.units=32"])
    with pytest.raises(CheckpointError) as err:
        Dreamer.load(trained.logdir, config=wider)
    one_line(str(err.value), str(trained.logdir / "checkpoint"), "does not fit")


def test_loaded_optimiser_follows_the_new_config_and_keeps_its_moments(trained: Dreamer, tmp_path: Path) -> None:
    path = trained.save(tmp_path / "ckpt")
    config = Config.from_dict(trained.config.to_dict())
    config.optim.actor_lr, config.optim.model_lr = 1e-4, 2e-4
    loaded = Dreamer.load(path, config=config)
    model_group, actor_group = loaded.learner.opt.param_groups
    assert (model_group["lr"], actor_group["lr"]) == (2e-4, 1e-4)  # not the checkpoint's
    assert_same(loaded.learner.opt.state_dict()["state"], trained.learner.opt.state_dict()["state"])


# ---------------------------------------------------------------------------------------------------
# 5. Replay data survives on disk


def test_replay_reloads_from_disk(trained: Dreamer) -> None:
    t = trained.config.train
    saved = trained.replay.stats()
    assert saved["steps"] == trained.state.env_steps > t.replay_chunk  # full chunks and a partial one
    reloaded = Replay(trained.logdir / "replay", t.replay_size, t.replay_chunk, t.recent_frac, seed=0)
    assert len(reloaded) >= saved["steps"]
    assert reloaded.num_episodes == saved["episodes"]
    batch = reloaded.sample(t.batch_size, t.batch_length)
    assert batch["vector"].shape == (t.batch_size, t.batch_length, 4)


def test_interrupted_save_keeps_checkpoint_behind_replay(
    trained: Dreamer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = shutil.copytree(trained.logdir, tmp_path / "run")
    agent = Dreamer.load(run)
    set_key(agent.config, "run.logdir", str(run))
    step = {k: v[0, 0] for k, v in agent.replay.sample(1, 1).items()}
    for _ in range(10):  # steps collected since the last save, held in memory only
        agent.replay.add(step)
    agent.state.env_steps += 10

    def killed(self: Replay) -> None:
        raise KeyboardInterrupt("killed while flushing the replay")

    monkeypatch.setattr(Replay, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        agent.save_run()
    monkeypatch.undo()
    t = agent.config.train
    on_disk = len(Replay(run / "replay", t.replay_size, t.replay_chunk))
    resumed = Dreamer.load(run)
    assert resumed.state.env_steps <= on_disk, (resumed.state, on_disk)


# ---------------------------------------------------------------------------------------------------
# 6. Batches with missing labels


def test_missing_labels(trained: Dreamer) -> None:
    t = trained.config.train
    batch = trained.replay.sample(t.batch_size, t.batch_length)
    B, T = batch["reward"].shape
    rng = np.random.default_rng(0)
    other_actions = np.eye(batch["action"].shape[-1], dtype=np.float32)[rng.integers(0, 2, (B, T))]
    assert not np.array_equal(other_actions, batch["action"])
    masks = {"action_mask": np.zeros((B, T), np.float32), "reward_mask": np.zeros((B, T), np.float32)}

    def step(data: dict[str, np.ndarray]) -> tuple[dict[str, float], torch.nn.Module]:
        learner = copy.deepcopy(trained.learner)
        torch.manual_seed(0)
        return learner.update(data, "online"), learner

    masked, learner = step({**batch, **masks})
    bad = {k: v for k, v in masked.items() if not math.isfinite(v)}
    assert not bad, f"non-finite metrics: {bad}"
    assert masked["loss/rew"] == 0.0  # no reward labels: no reward loss
    changed = [not torch.equal(a, b) for a, b in zip(learner.parameters(), trained.learner.parameters(), strict=True)]
    assert any(changed), "the update changed no parameter"

    # With the actions masked out, their values cannot matter; without the mask they do.
    masked_other, _ = step({**batch, **masks, "action": other_actions})
    plain, _ = step(batch)
    plain_other, _ = step({**batch, "action": other_actions})
    for key in ("loss/dyn", "loss/rep", "loss/rec", "loss/con"):
        assert masked[key] == masked_other[key], key
    assert plain["loss/dyn"] != plain_other["loss/dyn"]


@pytest.mark.parametrize(
    ("size", "official"),
    [("size1m", (571_123, 50_641, 66_111)), ("size12m", (8_852_419, 792_337, 853_503))],
)
def test_size_presets_have_the_official_parameter_counts(size: str, official: tuple[int, int, int]) -> None:
    """World model, actor and critic of a Crafter-shaped agent (64x64x3, 17 actions) at the official presets'
    counts (danijar/dreamerv3 e3f0224); Reverie's world model adds only its learned no-action input."""
    from reverie.envs.base import Space as Sp
    from reverie.learner import Learner

    learner = Learner(make_config([size]), {"image": Sp(np.uint8, (64, 64, 3), 0, 255)}, Sp(np.int64, (), 0, 17, True))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    no_action = learner.wm.rssm.no_action.numel()
    assert (count(learner.wm) - no_action, count(learner.ac.actor), count(learner.ac.critic)) == official
