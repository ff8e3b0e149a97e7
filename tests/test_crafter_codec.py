"""The Crafter grid codecs (model.vector_codec=crafter_grid, crafter_grid_delta): layout, what they learn, the
change the reward head reads and its gate, errors, checkpoints, and an offline agent that acts on observations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from reverie.config import Config, ConfigError, ModelConfig, make_config
from reverie.crafter.codec import (
    CHANGE_FEATURES,
    DeltaCodec,
    GridCodec,
    GridDecoder,
    GridEncoder,
    cell_materials,
    change_features,
    changed,
)
from reverie.crafter.env import ITEMS, MATERIALS, OBJECTS, CrafterEnv, symbolic_size
from reverie.envs.base import Space
from reverie.functional import symexp, twohot_decode, twohot_loss
from reverie.learner import Learner
from reverie.world_model import WorldModel

CFG = ModelConfig(units=64, layers=1)
TAIL = 7 * 9 * 19  # where the inventory starts: after the 63 cells of 19 channels


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """(40, 1219) symbolic observations of a wandering player."""
    pytest.importorskip("crafter")
    env = CrafterEnv(seed=0, symbolic=True)  # cows and zombies come into view
    rng = np.random.default_rng(0)
    out = [env.step({"action": 0, "reset": True})["vector"]]
    for _ in range(39):
        out.append(env.step({"action": int(rng.integers(1, 6)), "reset": False})["vector"])
    return np.stack(out)


def test_decoder_learns_each_cell_back_into_the_vector_layout(vectors: np.ndarray) -> None:
    torch.manual_seed(0)
    x = torch.as_tensor(vectors)
    feat = torch.eye(len(x))  # one code per observation: the decoder alone has to lay the cells out right
    dec = GridDecoder(len(x), x.shape[-1], CFG)
    opt = torch.optim.Adam(dec.parameters(), 3e-3)
    first = None
    for _ in range(300):
        loss = dec.loss(feat[None], x[None]).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    with torch.no_grad():
        mats, objs, tail = dec.logits(feat)
    assert mats.shape == (40, 63, 13) and objs.shape == (40, 63, 7) and tail.shape == (40, 22)
    assert np.abs(symexp(tail).numpy() - vectors[:, TAIL:]).max() < 0.05  # inventory, facing, daylight, sleeping
    # The picture (what an observation-reading policy sees in imagination) is the real vector again: one-hot
    # cells, whole inventory counts, one facing, sleeping 0/1; daylight stays a number.
    with torch.no_grad():
        sharp = dec.picture(feat).numpy()
    assert sharp.shape == vectors.shape
    assert vectors[:, :TAIL].reshape(40, 63, 19)[..., 13:].any()  # objects in view: the cells were not all empty
    np.testing.assert_array_equal(sharp[:, :TAIL], vectors[:, :TAIL])
    np.testing.assert_allclose(sharp[:, TAIL : TAIL + 20], vectors[:, TAIL : TAIL + 20], atol=1e-6)
    np.testing.assert_array_equal(sharp[:, -1], vectors[:, -1])
    assert np.abs(sharp[:, -2] - vectors[:, -2]).max() < 0.05
    assert set(np.unique(sharp[:, :TAIL])) <= {0.0, 1.0} and (sharp[:, TAIL + 16 : TAIL + 20].sum(-1) == 1).all()


def test_cell_materials_reads_the_materials_of_the_view(vectors: np.ndarray) -> None:
    cells = vectors[:, : 63 * (1 + len(MATERIALS) + len(OBJECTS))].reshape(40, 63, -1)
    got = cell_materials(vectors)
    assert got.shape == (40, 63)
    np.testing.assert_array_equal(cells[np.arange(40)[:, None], np.arange(63), got], 1.0)  # the hot channel
    assert len(np.unique(got)) > 2  # grass, sand, trees, water...: a real mix, not one constant


@pytest.mark.parametrize("delta", [False, True])
def test_decoder_loss_is_cross_entropy_per_cell(delta: bool) -> None:
    """Uniform logits: 63 cells of ln 13 + ln 7, plus (delta) ln 10 per inventory count, plus the tail's error."""
    dec = GridDecoder(4, 1219, CFG, delta=delta)
    target = torch.zeros(1, 1, 1219)
    grid = target[..., :TAIL].view(1, 1, 63, 19)
    grid[..., 2] = 1.0  # grass everywhere
    grid[0, 0, 10, 13] = 1.0  # a cow in cell 10
    target[..., TAIL + len(ITEMS) + 3] = 1.0  # facing down
    target[..., -2] = 0.5  # daylight
    with torch.no_grad():
        dec.out.weight.zero_()
        dec.out.bias.zero_()  # uniform: 13 materials, 7 object classes, 10 counts; tail predicted 0
        if delta:  # the convolutions over the previous frame add nothing either
            dec.change[-1].weight.zero_()
            dec.change[-1].bias.zero_()
    rest = target[..., TAIL + len(ITEMS) :] if delta else target[..., TAIL:]  # regressed in symlog space
    expected = 63 * (np.log(13) + np.log(7)) + float((torch.log1p(rest) ** 2).sum())
    expected += len(ITEMS) * np.log(10) if delta else 0.0
    assert float(dec.loss(torch.zeros(1, 1, 4), target).detach()) == pytest.approx(expected, rel=1e-5)


def test_encoder_shares_its_filters_across_the_map(vectors: np.ndarray) -> None:
    torch.manual_seed(0)
    enc = GridEncoder(1219, CFG)
    x = torch.as_tensor(vectors[:1])
    grid = x[:, :TAIL].reshape(1, 7, 9, 19).permute(0, 3, 1, 2)
    maps = enc.conv(grid)  # (1, 32, 7, 9)
    shifted = torch.roll(grid, 1, dims=3)  # the map one column to the right
    # where neither the wrapped column nor the padding is in reach (two 3x3 convs: 2 cells), the conv
    # features move with the map: the same filters everywhere
    assert torch.allclose(enc.conv(shifted)[..., 3:7], torch.roll(maps, 1, dims=3)[..., 3:7], atol=1e-5)
    assert not torch.allclose(enc.conv(shifted)[..., 3:7], maps[..., 3:7], atol=1e-3)
    assert enc(x).shape == (1, 64)


def test_codec_errors_name_the_fix(one_line: Callable[..., None]) -> None:
    with pytest.raises(ValueError) as err:
        GridEncoder(100, CFG)
    one_line(str(err.value), "1219", "model.vector_codec=mlp")
    spaces = {"a": Space(np.float32, (1219,), 0, 1), "b": Space(np.float32, (3,))}
    for codec in ("crafter_grid", "crafter_grid_delta"):
        with pytest.raises(ValueError) as err:
            WorldModel(spaces, 17, ModelConfig(vector_codec=codec, units=16, layers=1))
        one_line(str(err.value), f"model.vector_codec={codec}", "['a', 'b']", "model.vector_codec=mlp")


def test_unknown_codec_is_a_config_error_listing_the_registered_codecs(one_line: Callable[..., None]) -> None:
    with pytest.raises(ConfigError) as err:
        make_config([], ["model.vector_codec=nope"])
    one_line(str(err.value), "model.vector_codec", "'mlp'", "'crafter_grid'", "'crafter_grid_delta'")
    assert make_config([], ["model.vector_codec=crafter_grid_delta"]).model.vector_codec == "crafter_grid_delta"


def grid_learner(debug_config: Callable[..., Config], tmp_path: Path, codec: str, *overrides: str) -> Learner:
    """The learner of a fresh debug agent on crafter-symbolic with the codec ``codec`` and ``overrides``."""
    from reverie import Dreamer

    cfg = debug_config(tmp_path, "env.id=crafter-symbolic", f"model.vector_codec={codec}", *overrides)
    obs_space = {"vector": Space(np.float32, (symbolic_size(),), 0.0, 1.0)}
    return Dreamer(cfg, obs_space, Space(np.int64, (), 0, 17, discrete=True)).learner


@pytest.mark.parametrize("codec", ["crafter_grid", "crafter_grid_delta"])
def test_world_model_with_the_codec_trains_and_reloads(
    vectors: np.ndarray, tmp_path: Path, debug_config: Callable[..., Config], codec: str
) -> None:
    from reverie import Dreamer

    cfg = debug_config(tmp_path, "env.id=crafter-symbolic", f"model.vector_codec={codec}")
    obs_space = {"vector": Space(np.float32, (symbolic_size(),), 0.0, 1.0)}
    agent = Dreamer(cfg, obs_space, Space(np.int64, (), 0, 17, discrete=True))
    wm = agent.learner.wm
    delta = codec == "crafter_grid_delta"
    assert wm.codec is (DeltaCodec if delta else GridCodec)
    assert isinstance(wm.encoder.vector, GridEncoder) and isinstance(wm.decoder.vector, GridDecoder)
    assert wm.decoder.reads_prev is delta and wm.change_key == ("vector" if delta else None)
    assert wm.decoder.vector.count_classes is delta and wm.decoder.vector.count_copy is delta
    batch = {
        "vector": torch.as_tensor(vectors).reshape(4, 10, -1),
        "action": torch.zeros(4, 10, 17),
        "reward": torch.zeros(4, 10),
        "is_first": torch.zeros(4, 10, dtype=torch.bool),
        "is_terminal": torch.zeros(4, 10, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    batch = {k: v.to(agent.learner.device) for k, v in batch.items()}
    opt = torch.optim.Adam(wm.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        total, _, metrics = wm.loss(batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(metrics["loss/rec"]))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    again = Dreamer.load(agent.save(tmp_path / "ckpt"))
    assert again.config.model.vector_codec == codec
    assert again.learner.wm.decoder.reads_prev is delta and again.learner.wm.change_key == wm.change_key
    with torch.no_grad():  # the same latent samples for both
        a = torch.manual_seed(1) and wm.loss(batch)[0]
        b = torch.manual_seed(1) and again.learner.wm.loss(batch)[0]
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_decoder_reading_the_previous_frame_predicts_the_next_one() -> None:
    """The delta decoder sees the frame before: features that carry only the action (4 moves and ``do``) then
    suffice to picture each next view, which they cannot on their own (the plain decoder)."""
    pytest.importorskip("crafter")
    env = CrafterEnv(seed=0, symbolic=True)
    rng = np.random.default_rng(0)
    frames, actions = [env.step({"action": 0, "reset": True})["vector"]], []
    for _ in range(60):
        actions.append(int(rng.integers(1, 6)))
        frames.append(env.step({"action": actions[-1], "reset": False})["vector"])
    x = torch.as_tensor(np.stack(frames))
    feat = torch.nn.functional.one_hot(torch.as_tensor(actions), 6).float()[None]  # (1, 60, 6)
    target, prev = x[None, 1:], x[None, :-1]
    scores = {}
    for delta in (False, True):
        torch.manual_seed(0)
        dec = GridDecoder(6, x.shape[-1], CFG, delta=delta)
        assert dec.reads_prev is delta
        opt = torch.optim.Adam(dec.parameters(), 3e-3)
        for _ in range(200):
            loss = dec.loss(feat, target, prev).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            picture = dec.picture(feat, prev)[0].numpy()
        truth, before = cell_materials(target[0].numpy()), cell_materials(prev[0].numpy())
        moved = truth != before  # the cells a step changed: "nothing changes" gets none of them
        scores[delta] = float((cell_materials(picture) == truth)[moved].mean())
    assert scores[True] > 0.9 and scores[False] < 0.6, scores
    # an all-zero previous frame is "none", the same as giving no frame at all
    with torch.no_grad():
        assert dec.picture(feat).shape == target.shape
        none, zeros, real = dec.logits(feat), dec.logits(feat, torch.zeros_like(prev)), dec.logits(feat, prev)
    assert all(torch.allclose(a, b) for a, b in zip(none, zeros, strict=True))
    assert not torch.allclose(real[0], none[0])


def test_imagination_pictures_each_step_from_the_picture_before(
    tmp_path: Path, debug_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An observation-reading policy's imagined view at step t is pictured from the one at t-1: the real
    observation at the start, the pictured ones after."""
    learner = grid_learner(debug_config, tmp_path, "crafter_grid_delta", "ac.input=obs")
    assert learner.ac.actor.obs_keys == ["vector"] and not learner.ac.actor.reads_feat
    calls: list[tuple[Tensor | None, Tensor]] = []
    picture = learner.wm.picture

    def recording(
        feat: Tensor, prev: dict[str, Tensor] | None = None, keys: list[str] | None = None
    ) -> dict[str, Tensor]:
        out = picture(feat, prev, keys)
        calls.append((None if prev is None else prev["vector"], out["vector"]))
        return out

    monkeypatch.setattr(learner.wm, "picture", recording)
    first = torch.rand(3, symbolic_size(), device=learner.device).round()
    with torch.no_grad():
        traj = learner.imagine(learner.wm.initial(3, learner.device), 3, first_obs={"vector": first})
    assert len(calls) == 3  # steps 1-3; step 0 reads the real observation
    assert calls[0][0] is not None and torch.equal(calls[0][0], first)
    for (_, before), (prev, _) in zip(calls[:-1], calls[1:], strict=True):
        assert prev is not None and torch.equal(prev, before)
    pics = traj["obs/vector"]  # (3, 4, N)
    assert torch.equal(pics[:, 0], first) and all(torch.equal(pics[:, t + 1], calls[t][1]) for t in range(3))
    # and each picture is the decoder's, from the features of its step and the picture before
    with torch.no_grad():
        for t in (1, 2, 3):
            again = learner.wm.decoder.picture(traj["feat"][:, t], {"vector": pics[:, t - 1]}, ["vector"])
            assert torch.equal(again["vector"], pics[:, t])


@pytest.fixture(scope="module")
def scripted_episode(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """One 300-step episode of the scripted player (wood, a table, tools: rewards at a few steps)."""
    pytest.importorskip("crafter")
    from reverie.data import record

    folder = tmp_path_factory.mktemp("scripted") / "ds"
    return record("crafter-symbolic", "scripted", episodes=1, folder=folder, seed=1, time_limit=300).episode(0)


def test_change_features_read_what_a_step_changed(scripted_episode: dict[str, np.ndarray]) -> None:
    obs = torch.as_tensor(scripted_episode["vector"])
    change = change_features(obs[1:], obs[:-1])  # (T - 1, 64)
    assert change.shape == (len(obs) - 1, CHANGE_FEATURES) and DeltaCodec.change_dim == CHANGE_FEATURES
    assert torch.equal(DeltaCodec.change(obs[1:], obs[:-1]), change)
    assert torch.equal(change[:, -1], torch.ones(len(obs) - 1))  # there is a frame before
    assert torch.allclose(change[:, :13].sum(-1), torch.zeros(len(obs) - 1))  # one material per cell
    wood = torch.as_tensor(scripted_episode["log/inventory_wood"]).float()
    column = 19 + ITEMS.index("wood")  # the tail's change, in whole items
    assert torch.allclose(change[:, column], wood[1:] - wood[:-1], atol=1e-4)
    assert (wood[1:] > wood[:-1]).any()  # the player collected wood
    assert torch.equal(change_features(obs, torch.zeros_like(obs)), torch.zeros(len(obs), CHANGE_FEATURES))
    assert torch.equal(change_features(obs, None), torch.zeros(len(obs), CHANGE_FEATURES))


def episode_batch(episode: dict[str, np.ndarray]) -> tuple[dict[str, Tensor], dict[str, Space]]:
    """One recorded episode as a (1, T) batch (vector, reward, is_first) and its observation space."""
    obs = torch.as_tensor(episode["vector"])[None]  # (1, T, N)
    is_first = torch.zeros(obs.shape[:2], dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"vector": obs, "reward": torch.as_tensor(episode["reward"]).float()[None], "is_first": is_first}
    return batch, {"vector": Space(np.float32, (obs.shape[-1],), 0.0, 1.0)}


def test_reward_head_reading_the_change_ties_the_reward_to_its_step(scripted_episode: dict[str, np.ndarray]) -> None:
    """Features that carry nothing leave a latent-only reward head (``crafter_grid``) at the mean reward on every
    step; with ``crafter_grid_delta`` the head finds the rewarded steps from what changed (the inventory, the view)."""
    batch, spaces = episode_batch(scripted_episode)
    reward = batch["reward"]
    paid = reward[0] >= 1
    assert 2 <= int(paid.sum()) < 30
    gaps = {}
    for codec in ("crafter_grid", "crafter_grid_delta"):
        torch.manual_seed(0)
        wm = WorldModel(spaces, 17, ModelConfig(units=64, layers=1, vector_codec=codec, bins=41))
        feat = torch.zeros(1, reward.shape[1], wm.feat_dim)
        opt = torch.optim.Adam(wm.reward_head.parameters(), 3e-3)
        for _ in range(200):
            loss = twohot_loss(wm.recorded_reward_logits(feat, batch), reward, wm.bins).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = twohot_decode(wm.recorded_reward_logits(feat, batch), wm.bins)[0]
        gaps[codec] = float(pred[paid].mean() - pred[reward[0] == 0].mean())
    assert gaps["crafter_grid_delta"] > 0.5 and abs(gaps["crafter_grid"]) < 0.05, gaps


def test_every_paying_step_of_scripted_play_changes_something(scripted_episode: dict[str, np.ndarray]) -> None:
    """The premise of the delta codec's gate: in Crafter a reward comes with a change of the view's cell counts,
    the inventory or the sleeping flag, while many steps change none of these (blocked moves, noops)."""
    obs = torch.as_tensor(scripted_episode["vector"])
    moved = changed(change_features(obs[1:], obs[:-1]))
    assert torch.equal(DeltaCodec.gate(change_features(obs[1:], obs[:-1])), moved)
    reward = torch.as_tensor(scripted_episode["reward"])[1:]
    assert (reward != 0).sum() >= 2 and bool(moved[reward != 0].all())
    assert 0 < int((~moved).sum()) < len(moved)
    assert not bool(changed(change_features(obs, None)).any())  # no frame before: nothing to read


def test_reward_gate_predicts_and_learns_no_reward_where_nothing_changed(
    scripted_episode: dict[str, np.ndarray],
) -> None:
    """A delta-codec head taught that every step pays 1 predicts exactly 0 on the steps that changed nothing (and at
    the episode start, with no frame before), about 1 on the others, and the unchanged steps give it no gradient."""
    batch, spaces = episode_batch(scripted_episode)
    obs = batch["vector"]
    moved = changed(change_features(obs[0, 1:], obs[0, :-1]))
    torch.manual_seed(0)
    wm = WorldModel(spaces, 17, ModelConfig(units=32, layers=1, vector_codec="crafter_grid_delta", bins=41))
    feat = torch.zeros(1, obs.shape[1], wm.feat_dim)
    ones = torch.ones(obs.shape[:2])
    opt = torch.optim.Adam(wm.reward_head.parameters(), 3e-3)
    for _ in range(100):
        loss = twohot_loss(wm.recorded_reward_logits(feat, batch), ones, wm.bins)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    with torch.no_grad():
        pred = twohot_decode(wm.recorded_reward_logits(feat, batch), wm.bins)[0]
    assert float(pred[0]) == 0.0 and torch.equal(pred[1:][~moved], torch.zeros(int((~moved).sum())))
    # the few steps that moved have inputs of their own and are fitted on the whole (one may sit off 1)
    assert float(pred[1:][moved].median()) > 0.8, pred[1:][moved]
    opt.zero_grad()  # the unchanged steps' loss is a constant of the head's weights
    loss = twohot_loss(wm.recorded_reward_logits(feat, batch), ones, wm.bins)
    loss[0, 1:][~moved].sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in wm.reward_head.parameters())
    opt.zero_grad()  # while a step that moved does move it
    loss = twohot_loss(wm.recorded_reward_logits(feat, batch), 2 * ones, wm.bins)
    loss[0, 1:][moved].sum().backward()
    assert any(p.grad is not None and p.grad.any() for p in wm.reward_head.parameters())


def randomize_reward_head(learner: Learner) -> None:
    """A head that reads its input: the reward head's output layer starts at 0, which reads nothing."""
    torch.manual_seed(0)
    with torch.no_grad():
        for param in learner.wm.reward_head.parameters():
            param.normal_(0.0, 0.3)


def test_imagined_reward_reads_the_change_between_pictures(tmp_path: Path, debug_config: Callable[..., Config]) -> None:
    """A policy that reads no observation still gets its rollouts pictured when the reward head reads the change,
    and the reward at step t reads the change from the picture at t-1 (the real one at the start), gated."""
    learner = grid_learner(debug_config, tmp_path, "crafter_grid_delta")
    assert learner.ac.actor.obs_keys == [] and learner.pictured_keys() == ["vector"]
    randomize_reward_head(learner)
    wm = learner.wm
    first = torch.as_tensor(np.random.default_rng(0).random((3, symbolic_size())).round(), dtype=torch.float32)
    first = first.to(learner.device)
    with torch.no_grad():
        traj = learner.imagine(wm.initial(3, learner.device), 2, first_obs={"vector": first})
        pics = traj["obs/vector"]  # (3, 3, N)
        assert torch.equal(pics[:, 0], first) and traj["reward"].shape == (3, 3)
        for t in (1, 2):
            change = change_features(pics[:, t], pics[:, t - 1])
            head = twohot_decode(wm.reward_head(torch.cat([traj["feat"][:, t], change], -1)), wm.bins)
            expected = torch.where(changed(change), head, torch.zeros_like(head))
            assert torch.allclose(traj["reward"][:, t], expected, atol=1e-5)
            other = change_features(pics[:, t], torch.zeros_like(pics[:, t]))  # no frame before
            assert not torch.allclose(
                expected, twohot_decode(wm.reward_head(torch.cat([traj["feat"][:, t], other], -1)), wm.bins)
            )


def test_reward_uncertainty_reads_the_pictured_change(tmp_path: Path, debug_config: Callable[..., Config]) -> None:
    """The ensemble's reward spread goes through the same gated, change-reading head: with no frame before nothing
    changed, so every member predicts exactly 0; from a real frame the members disagree."""
    learner = grid_learner(debug_config, tmp_path, "crafter_grid_delta", "model.ensemble=3")
    randomize_reward_head(learner)
    wm = learner.wm
    state = wm.initial(4, learner.device)
    action = torch.nn.functional.one_hot(torch.arange(4) + 1, 17).float().to(learner.device)
    vector = np.random.default_rng(1).random((4, symbolic_size())).round()
    prev = {"vector": torch.as_tensor(vector, dtype=torch.float32, device=learner.device)}
    with torch.no_grad():
        real = wm.step(state, action, prev, uncertainty=True)
        none = wm.step(state, action, None, uncertainty=True)
    assert real.reward_uncertainty is not None and none.reward_uncertainty is not None
    assert real.uncertainty is not None and torch.equal(real.uncertainty, none.uncertainty)  # the latent is the same
    zeros = torch.zeros(4, device=learner.device)
    assert torch.equal(none.reward, zeros) and torch.equal(none.reward_uncertainty, zeros)
    moved = changed(change_features(real.obs["vector"], prev["vector"]))
    assert bool(moved.any()) and bool((real.reward_uncertainty[moved] > 0).all()), real.reward_uncertainty


def test_count_classes_picture_the_inventory_that_regression_rounds_wrong(
    scripted_episode: dict[str, np.ndarray],
) -> None:
    """Features that hold the inventory counts themselves: the decoder still has to put them through its
    output. Beside 63 cells' cross-entropy a regressed count (``crafter_grid``) stays off by half an item or more
    on many steps; a categorical count (``crafter_grid_delta``) comes out whole."""
    x = torch.as_tensor(scripted_episode["vector"]).float()[None, ::3]  # (1, T, N): every third step is enough
    counts = x[..., TAIL : TAIL + len(ITEMS)] * 9
    torch.manual_seed(0)
    feat = torch.cat([counts, torch.randn(*counts.shape[:-1], 8)], -1)
    exact = {}
    for delta in (False, True):
        torch.manual_seed(0)
        dec = GridDecoder(feat.shape[-1], x.shape[-1], CFG, delta=delta)
        assert dec.count_classes is delta
        opt = torch.optim.Adam(dec.parameters(), 3e-3)
        for _ in range(150):
            loss = dec.loss(feat, x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pictured = dec.picture(feat)[..., TAIL : TAIL + len(ITEMS)] * 9
        assert pictured.shape == counts.shape
        exact[delta] = float(((pictured - counts).abs() < 0.5).float().mean())
    assert exact[True] > 0.85 and exact[False] < exact[True] - 0.15, exact


def test_count_copy_keeps_the_previous_inventory_by_default(scripted_episode: dict[str, np.ndarray]) -> None:
    """Features that carry nothing, the frame before given: the delta decoder's pictured inventory is the previous
    one from the start (before any training), through the learned bonus for keeping each count."""
    x = torch.as_tensor(scripted_episode["vector"]).float()[None]
    target, prev = x[:, 1:], x[:, :-1]
    items = slice(TAIL, TAIL + len(ITEMS))
    kept = (target[..., items] == prev[..., items]).all(-1)[0]
    assert 0.5 < float(kept.float().mean()) < 1.0  # most steps keep the inventory, some change it
    feat = torch.zeros(1, target.shape[1], 8)
    torch.manual_seed(0)
    dec = GridDecoder(8, x.shape[-1], CFG, delta=True)
    right = {}
    for bonus in (True, False):
        with torch.no_grad():
            if not bonus:
                dec.copy_weight.zero_()
            pictured = dec.picture(feat, prev)[..., items]
        right[bonus] = float((pictured == target[..., items]).all(-1)[0][kept].float().mean())
    assert right[True] == 1.0 and right[False] < 0.5, right


def test_offline_agent_on_observations_fits_all_three_phases_and_acts(
    tmp_path: Path, tiny_dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.vector_codec=crafter_grid_delta ac.input=obs`` on the offline recipe (debug sizes on top): model, BC
    alone and RL all run on a recorded crafter-symbolic dataset, and the agent that comes back from the checkpoint
    plays on observations alone."""
    pytest.importorskip("crafter")
    from reverie import Dreamer
    from reverie.data import Dataset

    data = Dataset(tiny_dataset("crafter-symbolic", "crafter-symbolic"))
    phases: list[str] = []
    update = Learner.update

    def counting(self: Learner, batch: dict[str, np.ndarray], phase: str, *args: object, **kw: object) -> object:
        phases.append(phase)
        return update(self, batch, phase, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Learner, "update", counting)
    cfg = make_config(
        ["offline", "debug"],
        [
            f"run.logdir={tmp_path / 'run'}",
            "run.eval_episodes=1",
            "model.ensemble=2",
            "model.vector_codec=crafter_grid_delta",
            "ac.input=obs",
            "offline.bc_frac=0.25",
            "offline.rl_frac=0.25",
        ],
    )
    agent = Dreamer(cfg).fit(data, steps=16)
    assert phases == ["model"] * 8 + ["bc"] * 4 + ["rl"] * 4
    assert agent.state.offline_updates == 16 and agent.state.has_prior
    assert agent.learner.pictured_keys() == ["vector"] and not agent.learner.ac.actor.reads_feat
    assert agent.last_eval["eval/length"] == 12 and "eval/score" in agent.last_eval  # it played, Crafter scored it
    again = Dreamer.load(tmp_path / "run")
    assert again.config.model.vector_codec == "crafter_grid_delta" and again.config.ac.input == "obs"
    assert again.learner.wm.codec is DeltaCodec and again.state.has_prior
    learner = again.learner
    obs = torch.as_tensor(data.episode(1)["vector"][:3], device=learner.device)
    with torch.no_grad():  # the policy reads the observation: another state of the model changes nothing
        feat = torch.randn(3, learner.wm.feat_dim, device=learner.device)
        a = learner.ac.actor(feat, {"vector": obs}).logits
        b = learner.ac.actor(torch.randn_like(feat), {"vector": obs}).logits
        c = learner.ac.actor(feat, {"vector": torch.roll(obs, 1, 0)}).logits
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    action, _ = again.predict({"vector": data.episode(1)["vector"][0], "is_first": True})
    assert action.shape == () and 0 <= int(action) < 17


def test_a_recorded_dream_pictures_each_step_from_the_picture_before(
    tmp_path: Path, debug_config: Callable[..., Config]
) -> None:
    """``dream_recorded`` with pictures (the symbolic scaling study's open loop): the first dreamed view is pictured
    from the last real context step, each later one from the view pictured before it, and the rewards read the
    change between the two."""
    learner = grid_learner(debug_config, tmp_path, "crafter_grid_delta")
    wm = learner.wm
    g = torch.Generator().manual_seed(0)
    batch = {
        "vector": torch.rand(2, 6, symbolic_size(), generator=g).round(),
        "action": torch.nn.functional.one_hot(torch.randint(0, 17, (2, 6), generator=g), 17).float(),
        "is_first": torch.zeros(2, 6, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    batch = {k: v.to(learner.device) for k, v in batch.items()}
    with torch.no_grad():
        torch.manual_seed(5)
        feats, rewards, pictured = wm.dream_recorded(batch, 3, ["vector"])
        assert pictured["vector"].shape == (2, 3, symbolic_size()) and rewards.shape == (2, 3)
        for t in range(3):
            before = batch["vector"][:, 2] if t == 0 else pictured["vector"][:, t - 1]
            again = wm.picture(feats[:, t], {"vector": before.float()}, ["vector"])["vector"]
            assert torch.equal(again, pictured["vector"][:, t]), t
            change = wm.change({"vector": again}, {"vector": before.float()})
            assert torch.allclose(wm.reward(feats[:, t], change), rewards[:, t], atol=1e-6), t
