"""The Crafter grid codec (model.vector_codec=crafter_grid): layout, what it learns, errors, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from reverie.config import ConfigError, ModelConfig, make_config
from reverie.envs.base import Space
from reverie.functional import symexp, twohot_decode, twohot_loss
from reverie.symbolic import GridDecoder, GridEncoder, cell_materials, change_features, changed
from reverie.world_model import WorldModel

CFG = ModelConfig(units=64, layers=1)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """(40, 1219) symbolic observations of a wandering player."""
    pytest.importorskip("crafter")
    from reverie.envs import CrafterEnv

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
    recon = symexp(dec(feat)).detach().numpy()
    assert recon.shape == vectors.shape
    cells, truth = recon[:, :1197].reshape(-1, 63, 19), vectors[:, :1197].reshape(-1, 63, 19)
    assert (cells[..., :13].argmax(-1) == truth[..., :13].argmax(-1)).all()  # every material in its place
    has = truth[..., 13:].max(-1) > 0
    assert has.any() and (cells[..., 13:].max(-1) > 0.5)[has].all() and (cells[..., 13:].max(-1) < 0.5)[~has].all()
    assert np.abs(recon[:, 1197:] - vectors[:, 1197:]).max() < 0.05  # inventory, facing, daylight, sleeping
    # The sharp observation (what an observation-reading policy sees in imagination) is the real vector again:
    # one-hot cells, whole inventory counts, one facing, sleeping 0/1; daylight stays a number.
    sharp = dec.observation(feat).detach().numpy()
    assert sharp.shape == vectors.shape
    np.testing.assert_array_equal(sharp[:, :1197], vectors[:, :1197])
    np.testing.assert_allclose(sharp[:, 1197:1217], vectors[:, 1197:1217], atol=1e-6)
    np.testing.assert_array_equal(sharp[:, 1218], vectors[:, 1218])
    assert np.abs(sharp[:, 1217] - vectors[:, 1217]).max() < 0.05
    assert set(np.unique(sharp[:, :1197])) <= {0.0, 1.0} and (sharp[:, 1213:1217].sum(-1) == 1).all()


def test_cell_materials_reads_the_materials_of_the_view(vectors: np.ndarray) -> None:
    from reverie.envs.crafter import MATERIALS, OBJECTS

    cells = vectors[:, : 63 * (1 + len(MATERIALS) + len(OBJECTS))].reshape(40, 63, -1)
    got = cell_materials(vectors)
    assert got.shape == (40, 63)
    np.testing.assert_array_equal(cells[np.arange(40)[:, None], np.arange(63), got], 1.0)  # the hot channel
    assert len(np.unique(got)) > 2  # grass, sand, trees, water...: a real mix, not one constant


def test_decoder_loss_is_cross_entropy_per_cell() -> None:
    dec = GridDecoder(4, 1219, CFG)
    target = torch.zeros(1, 1, 1219)
    grid = target[..., :1197].view(1, 1, 63, 19)
    grid[..., 2] = 1.0  # grass everywhere
    grid[0, 0, 10, 13] = 1.0  # a cow in cell 10
    with torch.no_grad():
        dec.out.weight.zero_()
        dec.out.bias.zero_()  # uniform: 13 materials, 7 object classes, tail predicted 0
    tail = torch.log1p(target[..., 1197:])
    expected = 63 * (np.log(13) + np.log(7)) + float((tail**2).sum())
    assert float(dec.loss(torch.zeros(1, 1, 4), target).detach()) == pytest.approx(expected, rel=1e-5)


def test_encoder_shares_its_filters_across_the_map(vectors: np.ndarray) -> None:
    torch.manual_seed(0)
    enc = GridEncoder(1219, CFG)
    x = torch.as_tensor(vectors[:1])
    grid = x[:, :1197].reshape(1, 7, 9, 19).permute(0, 3, 1, 2)
    maps = enc.conv(grid)  # (1, 32, 7, 9)
    shifted = torch.roll(grid, 1, dims=3)  # the map one column to the right
    # where neither the wrapped column nor the padding is in reach (two 3x3 convs: 2 cells), the conv
    # features move with the map: the same filters everywhere
    assert torch.allclose(enc.conv(shifted)[..., 3:7], torch.roll(maps, 1, dims=3)[..., 3:7], atol=1e-5)
    assert not torch.allclose(enc.conv(shifted)[..., 3:7], maps[..., 3:7], atol=1e-3)
    assert enc(x).shape == (1, 64)


def test_codec_errors_name_the_fix(one_line) -> None:
    with pytest.raises(ValueError) as err:
        GridEncoder(100, CFG)
    one_line(str(err.value), "1219", "model.vector_codec=mlp")
    spaces = {"a": Space(np.float32, (1219,), 0, 1), "b": Space(np.float32, (3,))}
    with pytest.raises(ValueError) as err:
        WorldModel(spaces, 17, ModelConfig(vector_codec="crafter_grid", units=16, layers=1))
    one_line(str(err.value), "['a', 'b']", "model.vector_codec=mlp")
    with pytest.raises(ConfigError, match="vector_codec"):
        make_config([], ["model.vector_codec=grid"])


@pytest.mark.parametrize("reads_prev", [False, True])  # with the frame before: change-reading reward, count classes
def test_world_model_with_the_codec_trains_and_reloads(
    vectors: np.ndarray, tmp_path: Path, debug_config, reads_prev: bool
) -> None:
    from reverie import Dreamer
    from reverie.envs.crafter import symbolic_size

    cfg = debug_config(
        tmp_path,
        "env.id=crafter-symbolic",
        "model.vector_codec=crafter_grid",
        f"model.decoder_prev={reads_prev}",
        f"model.reward_change={reads_prev}",
        f"model.count_classes={reads_prev}",
    )
    obs_space = {"vector": Space(np.float32, (symbolic_size(),), 0.0, 1.0)}
    agent = Dreamer(cfg, obs_space, Space(np.int64, (), 0, 17, discrete=True))
    wm = agent.learner.wm
    assert isinstance(wm.encoder.mlp, GridEncoder) and wm.decoder.grid is not None
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
    assert again.config.model.vector_codec == "crafter_grid"
    assert again.config.model.decoder_prev is reads_prev and again.learner.wm.decoder.grid.reads_prev is reads_prev
    assert again.learner.wm.change_key == ("vector" if reads_prev else None)
    assert again.learner.wm.decoder.grid.count_classes is reads_prev
    with torch.no_grad():  # the same latent samples for both
        a = torch.manual_seed(1) and wm.loss(batch)[0]
        b = torch.manual_seed(1) and again.learner.wm.loss(batch)[0]
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_decoder_reading_the_previous_frame_predicts_the_next_one() -> None:
    """With ``model.decoder_prev`` the decoder sees the frame before: features that carry only the action
    (4 moves and ``do``) then suffice to picture each next view, which they cannot on their own."""
    pytest.importorskip("crafter")
    from reverie.envs import CrafterEnv

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
    for reads_prev in (False, True):
        torch.manual_seed(0)
        dec = GridDecoder(6, x.shape[-1], ModelConfig(units=64, layers=1, decoder_prev=reads_prev))
        opt = torch.optim.Adam(dec.parameters(), 3e-3)
        for _ in range(300):
            loss = dec.loss(feat, target, prev).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            picture = dec.observation(feat, prev)[0].numpy()
        truth, before = cell_materials(target[0].numpy()), cell_materials(prev[0].numpy())
        changed = truth != before  # the cells a step changed: "nothing changes" gets none of them
        scores[reads_prev] = float((cell_materials(picture) == truth)[changed].mean())
    assert scores[True] > 0.9 and scores[False] < 0.6, scores
    # an all-zero previous frame is "none", the same as giving no frame at all
    with torch.no_grad():
        assert dec(feat).shape == target.shape
        assert torch.allclose(dec(feat, torch.zeros_like(prev)), dec(feat))
        assert not torch.allclose(dec(feat, prev), dec(feat))


def test_imagination_pictures_each_step_from_the_picture_before(tmp_path: Path, debug_config, monkeypatch) -> None:
    """With ``model.decoder_prev`` an observation-reading policy's imagined view at step t is decoded from the
    one at t-1: the real observation at the start, the decoded ones after."""
    from reverie.envs.crafter import symbolic_size

    learner = grid_learner(
        debug_config, tmp_path, "model.decoder_prev=true", "ac.obs_input=true", "ac.feat_input=false"
    )
    calls: list[tuple[Tensor | None, Tensor]] = []
    decode = learner.decoded_obs

    def recording(feat: Tensor, keys: list[str], prev: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        out = decode(feat, keys, prev)
        calls.append((None if prev is None else prev["vector"], out["vector"]))
        return out

    monkeypatch.setattr(learner, "decoded_obs", recording)
    start = learner.wm.rssm.initial(3)
    first = torch.rand(3, symbolic_size(), device=learner.device).round()
    traj = learner.imagine(start, 3, first_obs={"vector": first})
    assert len(calls) == 3  # steps 1-3; step 0 reads the real observation
    assert torch.equal(calls[0][0], first)
    for (_, before), (prev, _) in zip(calls[:-1], calls[1:], strict=True):
        assert prev is not None and torch.equal(prev, before)
    assert torch.equal(traj["obs/vector"][:, 0], first) and torch.equal(traj["obs/vector"][:, 3], calls[-1][1])


@pytest.fixture(scope="module")
def scripted_episode(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """One 300-step episode of the scripted player (wood, a table, tools: rewards at a few steps)."""
    pytest.importorskip("crafter")
    from reverie.data import record

    folder = tmp_path_factory.mktemp("scripted") / "ds"
    return record("crafter-symbolic", "scripted", episodes=1, folder=folder, seed=1, time_limit=300).episode(0)


def test_change_features_read_what_a_step_changed(scripted_episode: dict[str, np.ndarray]) -> None:
    from reverie.envs.crafter import ITEMS
    from reverie.symbolic import CHANGE_FEATURES

    obs = torch.as_tensor(scripted_episode["vector"])
    change = change_features(obs[1:], obs[:-1])  # (T - 1, 64)
    assert change.shape == (len(obs) - 1, CHANGE_FEATURES)
    assert torch.equal(change[:, -1], torch.ones(len(obs) - 1))  # there is a frame before
    assert torch.allclose(change[:, :13].sum(-1), torch.zeros(len(obs) - 1))  # one material per cell
    wood = torch.as_tensor(scripted_episode["log/inventory_wood"]).float()
    column = 19 + ITEMS.index("wood")  # the tail's change, in whole items
    assert torch.allclose(change[:, column], wood[1:] - wood[:-1], atol=1e-4)
    assert (wood[1:] > wood[:-1]).any()  # the player collected wood
    assert torch.equal(change_features(obs, torch.zeros_like(obs)), torch.zeros(len(obs), CHANGE_FEATURES))
    assert torch.equal(change_features(obs, None), torch.zeros(len(obs), CHANGE_FEATURES))


def test_reward_head_reading_the_change_ties_the_reward_to_its_step(scripted_episode: dict[str, np.ndarray]) -> None:
    """Features that carry nothing leave a latent-only reward head at the mean reward on every step; with
    ``model.reward_change`` the head finds the rewarded steps from what changed (the inventory, the view)."""
    obs = torch.as_tensor(scripted_episode["vector"])[None]  # (1, T, N)
    reward = torch.as_tensor(scripted_episode["reward"]).float()[None]
    is_first = torch.zeros_like(reward, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"vector": obs, "reward": reward, "is_first": is_first}
    spaces = {"vector": Space(np.float32, (obs.shape[-1],), 0.0, 1.0)}
    paid = reward[0] >= 1
    assert 2 <= int(paid.sum()) < 30
    gaps = {}
    for reads_change in (False, True):
        torch.manual_seed(0)
        cfg = ModelConfig(units=64, layers=1, vector_codec="crafter_grid", reward_change=reads_change, bins=41)
        wm = WorldModel(spaces, 17, cfg)
        feat = torch.zeros(1, obs.shape[1], wm.rssm.feat_dim)
        opt = torch.optim.Adam(wm.reward_head.parameters(), 3e-3)
        for _ in range(200):
            loss = twohot_loss(wm.recorded_reward_logits(feat, batch), reward, wm.bins).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = twohot_decode(wm.recorded_reward_logits(feat, batch), wm.bins)[0]
        gaps[reads_change] = float(pred[paid].mean() - pred[reward[0] == 0].mean())
    assert gaps[True] > 0.5 and abs(gaps[False]) < 0.05, gaps


def test_every_paying_step_of_scripted_play_changes_something(scripted_episode: dict[str, np.ndarray]) -> None:
    """The premise of ``model.reward_gate``: in Crafter a reward comes with a change of the view's cell counts,
    the inventory or the sleeping flag, while many steps change none of these (blocked moves, noops)."""
    obs = torch.as_tensor(scripted_episode["vector"])
    moved = changed(change_features(obs[1:], obs[:-1]))
    reward = torch.as_tensor(scripted_episode["reward"])[1:]
    assert (reward != 0).sum() >= 2 and bool(moved[reward != 0].all())
    assert 0 < int((~moved).sum()) < len(moved)
    assert not bool(changed(change_features(obs, None)).any())  # no frame before: nothing to read


def test_reward_gate_predicts_and_learns_no_reward_where_nothing_changed(
    scripted_episode: dict[str, np.ndarray],
) -> None:
    """A head taught that every step pays 1 predicts about 1; gated, it predicts exactly 0 on the steps that changed
    nothing, and those steps give it no gradient."""
    obs = torch.as_tensor(scripted_episode["vector"])[None]
    is_first = torch.zeros(obs.shape[:2], dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"vector": obs, "is_first": is_first}
    spaces = {"vector": Space(np.float32, (obs.shape[-1],), 0.0, 1.0)}
    moved = changed(change_features(obs[0, 1:], obs[0, :-1]))
    preds = {}
    for gate in (False, True):
        torch.manual_seed(0)
        cfg = ModelConfig(
            units=32, layers=1, vector_codec="crafter_grid", reward_change=True, reward_gate=gate, bins=41
        )
        wm = WorldModel(spaces, 17, cfg)
        feat = torch.zeros(1, obs.shape[1], wm.rssm.feat_dim)
        opt = torch.optim.Adam(wm.reward_head.parameters(), 3e-3)
        for _ in range(100):
            loss = twohot_loss(wm.recorded_reward_logits(feat, batch), torch.ones(obs.shape[:2]), wm.bins)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        with torch.no_grad():
            preds[gate] = twohot_decode(wm.recorded_reward_logits(feat, batch), wm.bins)[0, 1:]
        if gate:  # the unchanged steps' loss is a constant of the head's weights
            opt.zero_grad()
            loss = twohot_loss(wm.recorded_reward_logits(feat, batch), torch.ones(obs.shape[:2]), wm.bins)
            loss[0, 1:][~moved].sum().backward()
            assert all(p.grad is None or not p.grad.any() for p in wm.reward_head.parameters())
    # the steps that changed nothing share one input, so the plain head fits them all; the few steps that moved
    # have inputs of their own and are fitted on the whole (one rare step may sit off 1 after 100 updates)
    assert float(preds[False][~moved].min()) > 0.8, preds[False][~moved].min()
    assert torch.equal(preds[True][~moved], torch.zeros(int((~moved).sum())))
    for gate in (False, True):
        assert float(preds[gate][moved].median()) > 0.8, preds[gate][moved]


def test_reward_gate_needs_reward_change(one_line) -> None:
    spaces = {"vector": Space(np.float32, (8,))}
    with pytest.raises(ValueError) as err:
        WorldModel(spaces, 3, ModelConfig(reward_gate=True, units=16, layers=1))
    one_line(str(err.value), "model.reward_gate", "model.reward_change=true")


@pytest.mark.parametrize("option", ["decoder_prev", "count_classes", "count_copy", "reward_change"])
def test_grid_options_need_the_grid_codec(one_line, option: str) -> None:
    spaces = {"vector": Space(np.float32, (8,))}
    with pytest.raises(ValueError) as err:
        WorldModel(spaces, 3, ModelConfig(**{option: True}, units=16, layers=1))
    one_line(str(err.value), f"model.{option}", "crafter_grid")


def test_imagined_reward_reads_the_change_between_pictures(tmp_path: Path, debug_config) -> None:
    """A policy that reads no observation still gets its rollouts pictured when the reward head reads the
    change, and the reward at step t reads the change from the picture at t-1 (the real one at the start)."""
    from reverie import Dreamer
    from reverie.envs.crafter import symbolic_size

    cfg = debug_config(
        tmp_path, "env.id=crafter-symbolic", "model.vector_codec=crafter_grid", "model.reward_change=true"
    )
    obs_space = {"vector": Space(np.float32, (symbolic_size(),), 0.0, 1.0)}
    learner = Dreamer(cfg, obs_space, Space(np.int64, (), 0, 17, discrete=True)).learner
    assert learner.ac.actor.obs_keys == [] and learner.pictured_keys() == ["vector"]
    first = torch.rand(3, symbolic_size(), device=learner.device).round()
    with torch.no_grad():
        traj = learner.imagine(learner.wm.rssm.initial(3), 2, first_obs={"vector": first})
        pics = traj["obs/vector"]  # (3, 3, N)
        assert torch.equal(pics[:, 0], first)
        reward = learner.imagined_reward(traj)
        for t in (1, 2):
            change = change_features(pics[:, t], pics[:, t - 1])
            head = learner.wm.reward_head(torch.cat([traj["feat"][:, t], change], -1))
            assert torch.allclose(reward[:, t], twohot_decode(head, learner.wm.bins), atol=1e-5)


def test_count_classes_picture_the_inventory_that_regression_rounds_wrong(
    scripted_episode: dict[str, np.ndarray],
) -> None:
    """Features that hold the inventory counts themselves: the decoder still has to put them through its
    output. Beside 63 cells' cross-entropy a regressed count stays off by half an item or more on many
    steps; a categorical count (``model.count_classes``) comes out whole."""
    from reverie.envs.crafter import ITEMS

    x = torch.as_tensor(scripted_episode["vector"]).float()[None]  # (1, T, N)
    start = x.shape[-1] - len(ITEMS) - 6  # the tail: inventory, facing, daylight, sleeping
    counts = x[..., start : start + len(ITEMS)] * 9
    torch.manual_seed(0)
    feat = torch.cat([counts, torch.randn(*counts.shape[:-1], 8)], -1)
    exact = {}
    for classes in (False, True):
        torch.manual_seed(0)
        dec = GridDecoder(feat.shape[-1], x.shape[-1], ModelConfig(units=64, layers=1, count_classes=classes))
        opt = torch.optim.Adam(dec.parameters(), 3e-3)
        for _ in range(150):
            loss = dec.loss(feat, x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pictured = dec.observation(feat)[..., start : start + len(ITEMS)] * 9
            assert dec(feat).shape == x.shape
        exact[classes] = float(((pictured - counts).abs() < 0.5).float().mean())
    assert exact[True] > 0.85 and exact[False] < exact[True] - 0.15, exact


def test_count_copy_keeps_the_previous_inventory_by_default(scripted_episode: dict[str, np.ndarray]) -> None:
    """Features that carry nothing, the frame before given: with ``model.count_copy`` the pictured inventory
    is the previous one from the start (before any training), and stays right on the steps that keep it."""
    from reverie.envs.crafter import ITEMS

    x = torch.as_tensor(scripted_episode["vector"]).float()[None]
    target, prev = x[:, 1:], x[:, :-1]
    start = x.shape[-1] - len(ITEMS) - 6
    kept = (target[..., start : start + len(ITEMS)] == prev[..., start : start + len(ITEMS)]).all(-1)[0]
    assert 0.5 < float(kept.float().mean()) < 1.0  # most steps keep the inventory, some change it
    feat = torch.zeros(1, target.shape[1], 8)
    right = {}
    for copy in (False, True):
        torch.manual_seed(0)
        cfg = ModelConfig(units=64, layers=1, decoder_prev=True, count_classes=True, count_copy=copy)
        dec = GridDecoder(8, x.shape[-1], cfg)
        with torch.no_grad():
            pictured = dec.observation(feat, prev)[..., start : start + len(ITEMS)]
        right[copy] = float((pictured == target[..., start : start + len(ITEMS)]).all(-1)[0][kept].float().mean())
    assert right[True] == 1.0 and right[False] < 0.5, right
    with pytest.raises(ValueError, match="model.count_copy=true .* model.count_classes=true"):
        GridDecoder(8, x.shape[-1], ModelConfig(units=64, layers=1, decoder_prev=True, count_copy=True))


def test_pessimism_reads_the_rollouts_pictured_change(tmp_path: Path, debug_config) -> None:
    """The ensemble's reward doubt reads each step's pictured change: passed in, or worked out from the rollout."""
    from reverie import offline
    from reverie.envs.crafter import symbolic_size

    learner = grid_learner(
        debug_config, tmp_path, "model.reward_change=true", "model.ensemble=3", "offline.reward_doubt=1.0"
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for param in learner.wm.reward_head.parameters():  # a head that reads its input (the output starts at 0)
            param.normal_(0.0, 0.3)
        traj = learner.imagine(
            learner.wm.rssm.initial(3),
            2,
            first_obs={"vector": torch.rand(3, symbolic_size(), device=learner.device).round()},
        )
        change = learner.imagined_change(traj)
        reward = learner.imagined_reward(traj, change=change)
        assert torch.equal(reward, learner.imagined_reward(traj))
        cont = torch.ones_like(reward)
        given = offline.pessimism(learner, traj, reward, cont, change)
        derived = offline.pessimism(learner, traj, reward, cont)
        zero = offline.pessimism(learner, traj, reward, cont, torch.zeros_like(change))
    assert torch.equal(given[0], derived[0]) and not torch.equal(given[0], zero[0])


def grid_learner(debug_config, tmp_path: Path, *overrides: str):  # noqa: ANN001, ANN201
    """The learner of a fresh debug agent on crafter-symbolic with the grid codec and ``overrides``."""
    from reverie import Dreamer
    from reverie.envs.crafter import symbolic_size

    cfg = debug_config(tmp_path, "env.id=crafter-symbolic", "model.vector_codec=crafter_grid", *overrides)
    obs_space = {"vector": Space(np.float32, (symbolic_size(),), 0.0, 1.0)}
    return Dreamer(cfg, obs_space, Space(np.int64, (), 0, 17, discrete=True)).learner


def test_offline_crafter_symbolic_preset_fits_all_three_phases_and_acts_on_observations(tmp_path: Path) -> None:
    """The benchmark's symbolic settings as one preset (with debug sizes on top): model, BC alone and RL all
    run on scripted recordings, and the agent that comes back from the checkpoint plays on observations alone."""
    pytest.importorskip("crafter")
    from reverie import Dreamer
    from reverie.data import record

    data = record("crafter-symbolic", "scripted", episodes=2, folder=tmp_path / "ds", seed=1, time_limit=60)
    cfg = make_config(
        ["offline", "offline_crafter_symbolic", "debug"],
        [f"run.logdir={tmp_path / 'run'}", "offline.eval_episodes=0", "model.ensemble=2"],
    )
    assert cfg.model.vector_codec == "crafter_grid" and not cfg.ac.feat_input and cfg.ac.prior_support == 0.1
    agent = Dreamer(cfg).fit(data, steps=16)  # model, BC alone, then RL at the preset's fractions
    assert agent.counters["offline_updates"] == 16 and agent.counters["rl_started"] == 1
    learner = agent.learner
    assert learner.pictured_keys() == ["vector"] and not learner.ac.actor.reads_feat
    again = Dreamer.load(tmp_path / "run")
    assert again.config.model.reward_gate and again.config.model.count_copy
    obs = torch.as_tensor(data.episode(1)["vector"][:3], device=again.learner.device)
    with torch.no_grad():  # the policy reads the observation: another state of the model changes nothing
        feat = torch.randn(3, again.learner.wm.rssm.feat_dim, device=again.learner.device)
        a = again.learner.ac.actor(feat, {"vector": obs}).logits
        b = again.learner.ac.actor(torch.randn_like(feat), {"vector": obs}).logits
    torch.testing.assert_close(a, b)
