"""Tests of the behaviour-cloning baselines: learning a known rule, labels, spaces, save/load, envs, features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reverie.baselines import BCPolicy, FeatureBC, InverseDynamics
from reverie.checkpoint import CheckpointError
from reverie.data import Dataset, DatasetError, DatasetWriter, record
from reverie.envs import Space, reserved_spaces

SMALL: dict[str, Any] = {"units": 32, "layers": 1}  # tiny nets keep the tests fast


@pytest.fixture(scope="module")
def rule_ds(rule_data, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return rule_data.write(tmp_path_factory.mktemp("bc") / "ds", [True, False, True, True, False, True])


@pytest.fixture(scope="module")
def trained(rule_ds: Dataset) -> tuple[BCPolicy, dict[str, float]]:
    policy = BCPolicy(rule_ds.obs_space, rule_ds.act_space["action"], **SMALL)
    return policy, policy.fit(rule_ds, steps=300, batch_size=64, lr=3e-3)


def held_out(n: int = 500) -> np.ndarray:
    vector = np.random.default_rng(99).normal(0, 0.5, (n, 4)).astype(np.float32)
    return vector[np.abs(vector[:, 2]) > 0.05]  # away from the decision boundary


def test_bc_learns_the_rule_from_labelled_episodes_only(rule_data, trained: tuple[BCPolicy, dict[str, float]]) -> None:
    policy, metrics = trained
    assert metrics["bc/pairs"] == 4 * 39  # the 2 unlabelled episodes (zeros for actions) are left out
    assert metrics["bc/accuracy"] > 0.9 and metrics["bc/loss"] < 0.3
    vector = held_out()
    assert (policy.act({"vector": vector}, deterministic=True) == rule_data.rule(vector)).mean() > 0.95
    sampled = policy.act({"vector": vector})
    assert (
        sampled.dtype == np.int64
        and sampled.shape == (len(vector),)
        and (sampled == rule_data.rule(vector)).mean() > 0.8
    )


def test_no_labelled_episode_or_other_spaces_refused(rule_data, tmp_path: Path, rule_ds: Dataset) -> None:
    unlabelled = rule_data.write(tmp_path / "none", [False, False])
    with pytest.raises(ValueError, match="no episode with actions"):
        BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL).fit(unlabelled, steps=1)
    wide = {**rule_data.OBS_SPACE, "vector": Space(np.float32, (5,)), "extra": Space(np.float32, (2,))}
    with pytest.raises(ValueError, match=r"\['extra', 'vector'\]"):
        BCPolicy(wide, rule_data.DISCRETE, **SMALL).fit(rule_ds, steps=1)
    with pytest.raises(ValueError, match=r"\['action'\]"):
        BCPolicy(rule_data.OBS_SPACE, Space(np.int64, (), 0, 3, discrete=True), **SMALL).fit(rule_ds, steps=1)


def test_return_weighted_bc_learns_the_rewarded_action_from_random_play(rule_data, tmp_path: Path) -> None:
    """Random recorded actions paid 1 where they matched ``rule``: plain BC learns no preference, return-weighted
    BC the rule; an episode without rewards weighs 1, and bad settings are refused."""
    with DatasetWriter(tmp_path / "ds", "CartPole-v1", rule_data.OBS_SPACE, rule_data.DISCRETE, chunk=16) as writer:
        for i in range(8):
            rng = np.random.default_rng(i)
            vector = rng.normal(0, 0.5, (40, 4)).astype(np.float32)
            action = rng.integers(0, 2, 40) * (np.arange(40) > 0)  # step 0 holds no action
            reward = np.zeros(40, np.float32)
            reward[1:] = action[1:] == rule_data.rule(vector[:-1])  # the action that led to step t paid at step t
            last = np.arange(40) == 39
            steps = {"vector": vector, "reward": reward, "is_first": np.arange(40) == 0}
            writer.add_episode({**steps, "is_last": last, "is_terminal": last, "action": action}, has_rewards=i < 7)
    data = Dataset(tmp_path / "ds")
    vector = held_out()
    agreement = []
    for temp in (0.0, 0.3):
        policy = BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL)
        policy.fit(data, steps=400, batch_size=64, lr=3e-3, return_temp=temp, return_discount=0.0)
        agreement.append((policy.act({"vector": vector}, deterministic=True) == rule_data.rule(vector)).mean())
    # Rewards below return_min_reward do not count: with the rule's rewards (1) below it, no preference again.
    policy = BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL)
    policy.fit(data, steps=400, batch_size=64, lr=3e-3, return_temp=0.3, return_discount=0.0, return_min_reward=2.0)
    agreement.append((policy.act({"vector": vector}, deterministic=True) == rule_data.rule(vector)).mean())
    assert agreement[0] < 0.75 and agreement[1] > 0.9 and agreement[2] < 0.75, agreement
    _, _, returns = BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL)._pairs(data, discount=0.0)
    assert np.isnan(returns[-39:]).all() and set(np.unique(returns[:-39])) == {0.0, 1.0}
    _, _, returns = BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL)._pairs(
        data, discount=0.0, min_reward=2.0
    )
    assert np.isnan(returns[-39:]).all() and set(np.unique(returns[:-39])) == {0.0}
    with pytest.raises(ValueError, match="return_discount"):
        BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL).fit(
            data, steps=1, return_temp=1.0, return_discount=1.0
        )
    with pytest.raises(ValueError, match="return_min_reward"):
        BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL).fit(
            data, steps=1, return_temp=1.0, return_min_reward=-1.0
        )


def test_seeded_fits_identical(rule_data, rule_ds: Dataset) -> None:
    a, b, c = (BCPolicy(rule_data.OBS_SPACE, rule_data.DISCRETE, **SMALL, seed=s) for s in (1, 1, 2))
    losses = [p.fit(rule_ds, steps=5, batch_size=16)["bc/loss"] for p in (a, b, c)]
    assert losses[0] == losses[1] != losses[2]


def test_save_load_identical_actions_and_corrupt_weights(
    tmp_path: Path, trained: tuple[BCPolicy, dict[str, float]]
) -> None:
    policy, _ = trained
    policy.save(tmp_path / "bc")
    policy.save(tmp_path / "bc")  # replaces the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bc"]
    loaded = BCPolicy.load(tmp_path / "bc")
    vector = held_out()
    assert np.array_equal(loaded.act({"vector": vector}, True), policy.act({"vector": vector}, True))
    assert loaded.args == policy.args and loaded.obs_space.keys() == {"vector"}
    (tmp_path / "bc" / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="weights.pt"):
        BCPolicy.load(tmp_path / "bc")
    with pytest.raises(CheckpointError, match="meta.json"):
        BCPolicy.load(tmp_path / "missing")


def test_evaluate_cartpole(trained: tuple[BCPolicy, dict[str, float]]) -> None:
    policy, _ = trained
    metrics = policy.evaluate("CartPole-v1", episodes=3, time_limit=50, deterministic=True)
    assert set(metrics) == {"eval/return", "eval/return_std", "eval/length"}
    assert 0 < metrics["eval/return"] == metrics["eval/length"] <= 50  # CartPole: reward 1 per step
    with pytest.raises(ValueError, match="Pendulum-v1"):
        policy.evaluate("Pendulum-v1", episodes=1)


def test_box_actions_regress_the_mean(rule_data, tmp_path: Path) -> None:
    ds = rule_data.write(tmp_path / "box", [True] * 4, rule_data.BOX, rule_data.box_rule)
    policy = BCPolicy(ds.obs_space, ds.act_space, **SMALL)
    metrics = policy.fit(ds, steps=300, batch_size=64, lr=3e-3)
    assert metrics["bc/loss"] < 0.03 and "bc/accuracy" not in metrics
    vector = held_out()
    action = policy.act({"vector": vector})
    assert action.dtype == np.float32 and action.shape == (len(vector), 1)
    assert np.abs(action - rule_data.box_rule(vector)).mean() < 0.1 and np.abs(action).max() <= 1


def test_images_crafter(tmp_path: Path) -> None:
    pytest.importorskip("crafter")
    ds = record("crafter", "random", episodes=2, folder=tmp_path / "crafter", time_limit=30)
    policy = BCPolicy(ds.obs_space, ds.act_space["action"], cnn_depth=4, **SMALL)
    assert list(policy.obs_space) == ["image"]
    metrics = policy.fit(ds, steps=3, batch_size=8)
    assert metrics["bc/pairs"] == 60 and np.isfinite(metrics["bc/loss"])
    metrics = policy.evaluate("crafter", episodes=2, time_limit=30)
    assert metrics["eval/length"] == 30 and 0 <= metrics["eval/score"] <= 100
    assert len([k for k in metrics if k.startswith("eval/success/")]) == 22


class FakeFeaturizer:
    """A fixed random projection of the vector plus a decayed running sum as "memory"; logs its calls."""

    feat_dim = 12

    def __init__(self) -> None:
        self.proj = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
        self.calls: list[tuple[Any, Any]] = []

    def _feat(self, vector: np.ndarray, memory: np.ndarray) -> np.ndarray:
        return np.concatenate([vector @ self.proj, np.tanh(memory)], -1)

    def encode(self, episode: dict[str, np.ndarray]) -> np.ndarray:
        assert {"action", "action_mask", "is_first", "vector"} <= set(episode)
        memory = np.cumsum(episode["vector"], 0) * 0.1
        return self._feat(episode["vector"], memory)

    def encode_step(
        self, obs: dict[str, np.ndarray], state: np.ndarray | None, action: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((state is None, None if action is None else action.shape))
        memory = np.zeros_like(obs["vector"]) if state is None else state
        memory = np.where(obs["is_first"][:, None], 0.0, memory) + obs["vector"] * 0.1
        return self._feat(obs["vector"], memory), memory


def test_feature_bc_learns_the_rule_and_keeps_state(rule_data, rule_ds: Dataset) -> None:
    featurizer = FakeFeaturizer()
    bc = FeatureBC(featurizer, rule_ds.act_space, **SMALL)
    metrics = bc.fit(rule_ds, steps=300, batch_size=64, lr=3e-3)
    assert metrics["bc/pairs"] == 4 * 39 and metrics["bc/accuracy"] > 0.9
    vector = held_out()
    feats = featurizer._feat(vector, np.zeros_like(vector))
    assert (bc.act(feats, deterministic=True) == rule_data.rule(vector)).mean() > 0.9
    metrics = bc.evaluate("CartPole-v1", episodes=2, time_limit=20)
    assert {"eval/return", "eval/return_std", "eval/length"} == set(metrics)
    assert featurizer.calls[0] == (True, None) and all(call == (False, (2,)) for call in featurizer.calls[1:])


MOVES = np.array([[0, 0], [1, 0], [0, 1]], np.float32)  # what actions 0, 1, 2 do to the walker's position


def walker_dataset(folder: Path, labelled: list[bool], image: bool = False) -> tuple[Dataset, list[np.ndarray]]:
    """Episodes of a random walker whose position moves by MOVES[action]; returns the dataset and every
    episode's true actions (also those the dataset leaves out)."""
    space = Space(np.uint8, (8, 8, 1), 0, 255) if image else Space(np.float32, (4,))
    key = "image" if image else "vector"
    truth = []
    with DatasetWriter(
        folder, "walker", {key: space, **reserved_spaces()}, Space(np.int64, (), 0, 3, discrete=True)
    ) as w:
        for i, has_actions in enumerate(labelled):
            rng = np.random.default_rng(i)
            action = rng.integers(0, 3, 30)
            action[0] = 0
            pos = np.cumsum(MOVES[action], 0) + rng.integers(0, 3, 2)  # (30, 2)
            if image:
                obs = np.zeros((30, 8, 8, 1), np.uint8)
                obs[np.arange(30), pos[:, 0].astype(int) % 8, pos[:, 1].astype(int) % 8] = 255
            else:
                obs = np.concatenate([pos, rng.normal(0, 1, (30, 2))], 1).astype(np.float32)  # plus noise features
            last = np.arange(30) == 29
            steps = {key: obs, "reward": np.zeros(30, np.float32), "is_first": np.arange(30) == 0}
            w.add_episode(steps | {"is_last": last, "is_terminal": last, "action": action}, has_actions=has_actions)
            truth.append(action)
    return Dataset(folder), truth


@pytest.mark.parametrize("image", [False, True])
def test_inverse_dynamics_fills_in_the_missing_actions(tmp_path: Path, image: bool) -> None:
    source, truth = walker_dataset(tmp_path / "src", [True] * 6 + [False] * 4, image)
    idm = InverseDynamics(source.obs_space, source.act_space, **SMALL)
    out, report = idm.label(source, tmp_path / "dst", steps=1000, held_out=0.34)
    assert report["idm/inferred_episodes"] == 4
    if image:  # both frames side by side in the channels; one bright pixel moving on 8 x 8 is harder to read
        pair = idm._inputs(source.episode(0))["image"]
        np.testing.assert_array_equal(pair[:-1, ..., 1], pair[1:, ..., 0])
        assert report["idm/held_out_accuracy"] > 0.5  # chance: 1/3
        return
    assert report["idm/held_out_accuracy"] > 0.9
    # each entry of the change is read in units of its largest step: moves of 1 stay, the noise is scaled down
    np.testing.assert_allclose(idm.change_scale["vector"][:2], 1.0)
    assert (idm.change_scale["vector"][2:] < 0.5).all()
    assert out.info["creation"]["inferred_episodes"] == [6, 7, 8, 9]
    assert len(out.info["creation"]["held_out_episodes"]) == 2
    for i in range(10):
        episode = out.episode(i)
        assert episode["action_mask"].all()  # every episode is labelled now
        if i < 6:  # recorded actions are kept as they were
            np.testing.assert_array_equal(episode["action"], truth[i])
        else:  # inferred ones are mostly right, and the first step keeps the recorded zero
            assert episode["action"][0] == 0 and (episode["action"][1:] == truth[i][1:]).mean() > 0.9
        np.testing.assert_array_equal(
            episode["image" if image else "vector"], source.episode(i)["image" if image else "vector"]
        )


def test_inverse_dynamics_refuses_data_without_labels_and_is_no_policy(tmp_path: Path) -> None:
    source, _ = walker_dataset(tmp_path / "none", [False, False])
    idm = InverseDynamics(source.obs_space, source.act_space, **SMALL)
    with pytest.raises(ValueError, match="no episode with actions"):
        idm.label(source, tmp_path / "dst")
    assert not (tmp_path / "dst" / "dataset.json").exists()
    with pytest.raises(TypeError, match="not a policy"):
        idm.evaluate("CartPole-v1", episodes=1)
    labelled, _ = walker_dataset(tmp_path / "some", [True, False])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="already holds files"):  # refused before any training
        InverseDynamics(labelled.obs_space, labelled.act_space, **SMALL).label(labelled, tmp_path / "busy", steps=10**9)


def test_cli_data_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reverie.cli import main

    walker_dataset(tmp_path / "src", [True, True, True, False])
    assert main(["data", "label", str(tmp_path / "src"), str(tmp_path / "dst"), "--steps", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 4 and report["idm/inferred_episodes"] == 1
    assert Dataset(tmp_path / "dst").episode_info(3)["has_actions"]
    walker_dataset(tmp_path / "bare", [False])
    assert main(["data", "label", str(tmp_path / "bare"), str(tmp_path / "out")]) == 2
    assert "no episode with actions" in capsys.readouterr().err
