"""Crafter as a plug-in: the score, table and episode summary (no crafter needed), the registration with
:mod:`reverie.plugins`, then the pixel and symbolic adapters."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import pytest

from reverie import plugins
from reverie.config import EnvConfig
from reverie.crafter.env import ACTIONS, EFFECT_KEYS, ITEMS, MATERIALS, OBJECTS, CrafterEnv, symbolic_size
from reverie.crafter.score import (
    ACHIEVEMENTS,
    LOG_PREFIX,
    achievement_table,
    crafter_score,
    plot_achievements,
    summary,
)
from reverie.envs import EnvError, check_env, make_env
from reverie.envs.base import model_keys

# ---------------------------------------------------------------------------------------------------
# Score and table: pure functions


def test_crafter_score_hand_values() -> None:
    assert crafter_score([0.0] * 22) == 0.0
    assert crafter_score([100.0] * 22) == pytest.approx(100.0)
    assert crafter_score([0.0, 99.0]) == pytest.approx(9.0)  # exp((ln 1 + ln 100) / 2) - 1
    assert crafter_score([3.0, 15.0]) == pytest.approx(7.0)  # sqrt(4 * 16) - 1
    rates = [50.0] * 11 + [0.0] * 11
    assert crafter_score(rates) == pytest.approx(math.sqrt(51.0) - 1.0)
    assert crafter_score(rates) < sum(rates) / len(rates)  # the geometric mean favours rare successes
    assert crafter_score(dict(zip(ACHIEVEMENTS, [100.0] * 22, strict=True))) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="percentages"):
        crafter_score([150.0])
    with pytest.raises(ValueError, match="at least one"):
        crafter_score([])


def test_achievement_table_from_both_key_forms() -> None:
    episodes = [
        {"collect_wood": 3, "place_table": 1, "wake_up": 0},
        {LOG_PREFIX + "collect_wood": np.int32(1), LOG_PREFIX + "wake_up": np.int32(2), "log/reward": 1.0},
        {"collect_wood": 0, "eat_cow": 1},
        {"collect_wood": 5},
    ]
    table = achievement_table(episodes)
    assert list(table) == list(ACHIEVEMENTS) and len(table) == 22
    assert table["collect_wood"] == 75.0 and table["place_table"] == 25.0 and table["wake_up"] == 25.0
    assert table["eat_cow"] == 25.0 and table["collect_diamond"] == 0.0
    expected = math.exp((math.log(76) + 3 * math.log(26)) / 22) - 1
    assert crafter_score(table) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one episode"):
        achievement_table([])
    with pytest.raises(ValueError, match="names no Crafter achievement"):
        achievement_table([{"score": 3.0}])


def test_plot_achievements_writes_png(tmp_path) -> None:
    rates = {name: 10.0 * i % 100 for i, name in enumerate(ACHIEVEMENTS)}
    path = plot_achievements([("a", rates), ("b", dict.fromkeys(ACHIEVEMENTS, 0.0))], tmp_path / "x" / "bars.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_achievements(rates, tmp_path / "one.png").stat().st_size > 1000


def test_summary_scores_finished_episodes_from_their_last_observations() -> None:
    finals = [
        {LOG_PREFIX + "collect_wood": np.int32(2), LOG_PREFIX + "wake_up": np.int32(1), "log/reward": 1.0},
        {LOG_PREFIX + "collect_wood": np.int32(1), LOG_PREFIX + "wake_up": np.int32(0)},
        {"log/reward": 0.0},  # no achievement counters (not a Crafter episode): left out
    ]
    out = summary(finals)
    assert set(out) == {"score"} | {f"success/{name}" for name in ACHIEVEMENTS}
    assert out["success/collect_wood"] == 100.0 and out["success/wake_up"] == 50.0 and out["success/eat_cow"] == 0.0
    assert out["score"] == pytest.approx(math.exp((math.log(101) + math.log(51)) / 22) - 1)
    assert summary([]) == {} and summary([{"log/reward": 1.0}]) == {}


def test_missing_crafter_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "crafter", None)  # import crafter -> ImportError
    for env_id in ("crafter", "crafter-symbolic"):
        with pytest.raises(EnvError, match=r'pip install "crafter>=1.8" numba'):
            make_env(EnvConfig(id=env_id), seed=0)


def test_a_near_miss_of_a_crafter_id_names_the_real_ones() -> None:
    with pytest.raises(EnvError, match="crafter-symbolic"):
        make_env(EnvConfig(id="crafter-pixels"), seed=0)


# ---------------------------------------------------------------------------------------------------
# The plug-in's registration


def test_the_plugin_registers_crafter_for_both_ids() -> None:
    game = plugins.game_for("crafter")
    assert game is not None and game.name == "crafter" and plugins.game_for("crafter-symbolic") is game
    assert plugins.game_for("CartPole-v1") is None and plugins.game_for("crafter-pixels") is None
    assert game.action_names == ACTIONS and len(ACTIONS) == 17 and ACTIONS[:2] == ("noop", "move_left")
    assert set(game.keys.values()) == set(ACTIONS)  # a key for every action, and only for actions
    assert game.keys["w"] == "move_up" and game.keys[" "] == "do" and game.keys["n"] == "noop"
    assert plugins.policy_names("crafter-symbolic") == ["scripted", "scripted-curious"]
    assert plugins.policy_names("CartPole-v1") == [] and plugins.policy("crafter", "nope") is None
    from reverie.crafter.codec import DeltaCodec, GridCodec
    from reverie.crafter.scripted import ScriptedPlayer, curious_player

    assert plugins.policy("crafter", "scripted") is ScriptedPlayer
    assert plugins.policy("crafter-symbolic", "scripted-curious") is curious_player
    assert plugins.codec_names() == ["mlp", "crafter_grid", "crafter_grid_delta"]
    assert plugins.codec("crafter_grid") is GridCodec and plugins.codec("crafter_grid_delta") is DeltaCodec
    with pytest.raises(ValueError, match="Unknown vector codec 'grid'; registered codecs: mlp, crafter_grid, "):
        plugins.codec("grid")


def test_the_plugin_summarizes_crafter_episodes_only() -> None:
    finals = [{LOG_PREFIX + "place_table": 1}, {LOG_PREFIX + "place_table": 0}]
    assert plugins.summarize("crafter-symbolic", finals) == summary(finals)
    assert plugins.summarize("crafter", finals)["success/place_table"] == 50.0
    assert plugins.summarize("CartPole-v1", finals) == {} and plugins.summarize("crafter", []) == {}


def test_the_effect_hook_sees_inventory_changes_but_not_vitals() -> None:
    game = plugins.game_for("crafter")
    assert game is not None and game.effect_keys == EFFECT_KEYS
    effect = plugins.resolve(game.effect)
    before = {key: np.zeros(3, np.int32) for key in EFFECT_KEYS}
    after = {key: value.copy() for key, value in before.items()}
    after["log/inventory_wood"][1] = 1  # env 1 collected wood
    assert "log/inventory_health" not in EFFECT_KEYS  # health comes and goes without an action
    assert effect(before, after).tolist() == [False, True, False]


@pytest.fixture
def registry() -> Iterator[list[str]]:
    """Names of games a test registers; unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        plugins.unregister_game(name)


def test_the_registry_rejects_a_second_game_claiming_a_crafter_id_or_codec(registry: list[str]) -> None:
    crafter = plugins.game_for("crafter-symbolic")
    for game in (
        plugins.Game("copycat", env_ids=("copycat-v0", "crafter-symbolic")),
        plugins.Game("copycat", env_ids=("copycat-v0",), codecs={"crafter_grid": object}),
    ):
        with pytest.raises(ValueError, match=r"'copycat' claims \['crafter(-symbolic|_grid)'\].*'crafter'"):
            plugins.register_game(game)
        assert plugins.game_for("crafter-symbolic") is crafter and plugins.game_for("copycat-v0") is None
    with pytest.raises(ValueError, match="core codecs"):
        plugins.register_game(plugins.Game("copycat", env_ids=("copycat-v0",), codecs={"mlp": object}))
    registry.append("copycat")  # a game of its own ids is welcome, and may register again under new ones
    plugins.register_game(plugins.Game("copycat", env_ids=("copycat-v0",)))
    plugins.register_game(plugins.Game("copycat", env_ids=("copycat-v1",)))
    again = plugins.game_for("copycat-v1")
    assert again is not None and again.name == "copycat" and plugins.game_for("copycat-v0") is None
    plugins.unregister_game("copycat")
    assert plugins.game_for("copycat-v1") is None and plugins.game_for("crafter") is crafter


def test_the_registry_rejects_a_claim_on_crafter_made_before_the_first_lookup() -> None:
    code = (
        "from reverie import plugins\n"
        "try:\n"
        "    plugins.register_game(plugins.Game('copycat', env_ids=('crafter-symbolic',)))\n"
        "except ValueError as err:\n"
        "    print('rejected:', err)\n"
        "print('serves crafter-symbolic:', plugins.game_for('crafter-symbolic').name)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # a fresh registry
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rejected: Game 'copycat' claims ['crafter-symbolic']" in run.stdout, run.stdout
    assert "serves crafter-symbolic: crafter" in run.stdout, run.stdout


# ---------------------------------------------------------------------------------------------------
# The adapter (needs crafter)


@pytest.fixture(scope="module")
def crafter():
    return pytest.importorskip("crafter")


def _check(env) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no episode ended": the probe is much shorter than an episode
        return check_env(env, max_steps=30)


def test_names_match_crafters_data(crafter) -> None:
    from crafter import constants

    assert tuple(constants.achievements) == ACHIEVEMENTS
    assert tuple(constants.materials) == MATERIALS and tuple(constants.items) == ITEMS
    assert tuple(constants.actions) == ACTIONS


@pytest.mark.parametrize(("env_id", "key"), [("crafter", "image"), ("crafter-symbolic", "vector")])
def test_make_env_builds_crafter_through_the_plugin(crafter, env_id: str, key: str) -> None:
    env = make_env(EnvConfig(id=env_id), seed=0)
    assert isinstance(env, CrafterEnv) and env.symbolic is (key == "vector")
    assert model_keys(env.obs_space) == [key]
    limited = make_env(EnvConfig(id=env_id, time_limit=3), seed=0)  # the usual wrappers go on top
    steps = [limited.step({"action": 0, "reset": t == 0}) for t in range(4)]
    assert [o["is_last"] for o in steps] == [False, False, False, True]


def test_pixel_contract_and_log_keys(crafter) -> None:
    env = make_env(EnvConfig(id="crafter"), seed=0)
    _check(env)
    assert model_keys(env.obs_space) == ["image"]
    assert env.act_space["action"].n == 17
    obs = env.step({"action": 0, "reset": True})
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8 and obs["image"].std() > 0
    logged = [k for k in obs if k.startswith(LOG_PREFIX)]
    assert sorted(logged) == sorted(LOG_PREFIX + name for name in ACHIEVEMENTS)
    assert all(obs[k] == 0 and obs[k].dtype == np.int32 for k in logged)
    assert obs["log/inventory_health"] == 9 and obs["log/inventory_wood"] == 0 and "log/reward" in obs
    env.close()


def test_symbolic_layout_and_contract(crafter) -> None:
    env = make_env(EnvConfig(id="crafter-symbolic"), seed=0)
    _check(env)
    assert model_keys(env.obs_space) == ["vector"]
    size = 7 * 9 * (1 + len(MATERIALS) + len(OBJECTS)) + len(ITEMS) + 4 + 2
    assert symbolic_size() == size == 1219 and env.obs_space["vector"].shape == (size,)
    obs = env.step({"action": 0, "reset": True})
    vector = obs["vector"]
    assert vector.shape == (size,) and vector.dtype == np.float32 and 0 <= vector.min() <= vector.max() <= 1
    cells = vector[: 7 * 9 * 19].reshape(7, 9, 19)
    assert (cells[..., :13].sum(-1) == 1).all()  # exactly one material (or "outside") per cell
    assert (cells[..., 13:].sum(-1) <= 1).all()  # at most one object per cell
    inventory = vector[7 * 9 * 19 : 7 * 9 * 19 + 16]
    assert inventory[:4] == pytest.approx([1.0] * 4) and inventory[4:].sum() == 0  # full vitals, nothing else
    assert vector[-6:-2].tolist() == [0, 0, 0, 1]  # crafter's player starts facing down
    env.close()


def _compare_with_semantic_view(env: CrafterEnv, vector: np.ndarray) -> tuple[int, int]:
    """Assert the vector's map against crafter's own semantic map; returns (objects, outside cells) seen."""
    world, player = env.crafter_env._world, env.crafter_env._player
    semantic = env.crafter_env._sem_view()  # (64, 64): material ids 1..12, then player, cow, ..., arrow, plant
    cells = vector[: 7 * 9 * 19].reshape(7, 9, 19)
    objects = outside = 0
    for row in range(7):
        for col in range(9):
            x, y = player.pos[0] + col - 4, player.pos[1] + row - 3
            if not (0 <= x < 64 and 0 <= y < 64):
                assert cells[row, col, 0] == 1 and cells[row, col, 1:].sum() == 0
                outside += 1
                continue
            assert cells[row, col, world._mat_map[x, y]] == 1
            sem = int(semantic[x, y])
            if sem > 13:  # an object other than the player: cow, zombie, skeleton, arrow, plant
                channel = 13 + min(sem - 14, 4) + (sem == 18 and world[(x, y)][1].ripe)
                assert cells[row, col, channel] == 1, (row, col, sem)
                objects += 1
            else:
                assert cells[row, col, 13:].sum() == 0
    return objects, outside


def test_symbolic_map_matches_crafters_semantic_view(crafter) -> None:
    env = CrafterEnv(seed=0, symbolic=True)
    env.step({"action": 0, "reset": True})
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(40):
        obs = env.step({"action": rng.integers(1, 5), "reset": False})  # moves, to change the view
        seen += _compare_with_semantic_view(env, obs["vector"])[0]
    assert seen > 0  # cows and zombies were in view (seed 0)
    world, player = env.crafter_env._world, env.crafter_env._player
    corner = next((x, y) for x in range(3) for y in range(3) if world._obj_map[x, y] == 0)
    world.move(player, corner)  # next to the world's edge: part of the view is outside
    obs = env.step({"action": 0, "reset": False})
    assert _compare_with_semantic_view(env, obs["vector"])[1] > 0


def test_symbolic_rows_and_columns_are_the_pictures(crafter) -> None:
    env = CrafterEnv(seed=0)  # pixels: 7-pixel cells, the 9 x 7 view drawn from the top left
    before = env.step({"action": 0, "reset": True})["image"].astype(int)
    world, player = env.crafter_env._world, env.crafter_env._player
    world[(player.pos[0] + 3, player.pos[1] + 1)] = "lava"  # symbolic map: row 3 + 1, column 4 + 3
    changed = np.abs(env.crafter_env.render().astype(int) - before).sum(-1)
    rows, cols = np.nonzero(changed)
    assert (rows.min() // 7, rows.max() // 7, cols.min() // 7, cols.max() // 7) == (4, 4, 7, 7)
    vector = CrafterEnv(symbolic=True)
    vector._env = env.crafter_env  # read the same world symbolically
    cells = vector._vector()[: 7 * 9 * 19].reshape(7, 9, 19)
    assert cells[4, 7, 1 + MATERIALS.index("lava")] == 1


def test_symbolic_vector_changes_when_the_player_moves(crafter) -> None:
    env = CrafterEnv(seed=0, symbolic=True)
    obs = env.step({"action": 0, "reset": True})
    for action in (1, 2, 3, 4):  # move_left, move_right, move_up, move_down
        start = env.crafter_env._player.pos.copy()
        new = env.step({"action": action, "reset": False})
        if (env.crafter_env._player.pos != start).any():
            map_size = 7 * 9 * 19
            assert not np.array_equal(new["vector"][:map_size], obs["vector"][:map_size])
            facing = new["vector"][-6:-2]
            assert facing.argmax() == action - 1 and facing.sum() == 1
            return
        obs = new
    pytest.fail("the player could not move in any direction")


def test_achievement_counters_and_rewards(crafter) -> None:
    env = CrafterEnv(seed=0, symbolic=True, reward=False)
    env.step({"action": 0, "reset": True})
    env.crafter_env._player.achievements["collect_wood"] = 1  # as if the player had just collected wood
    obs = env.step({"action": 0, "reset": False})
    assert obs[LOG_PREFIX + "collect_wood"] == 1 and obs[LOG_PREFIX + "place_table"] == 0
    assert obs["log/reward"] == pytest.approx(1.0) and obs["reward"] == 0.0  # reward=False hides it
    assert achievement_table([obs])["collect_wood"] == 100.0
    obs = env.step({"action": 0, "reset": True})
    assert obs[LOG_PREFIX + "collect_wood"] == 0  # per-episode counters


def test_death_is_terminal_and_the_length_limit_is_not(crafter) -> None:
    env = CrafterEnv(seed=0, symbolic=True)
    env.step({"action": 0, "reset": True})
    env.crafter_env._player.health = 0
    obs = env.step({"action": 0, "reset": False})
    assert obs["is_last"] and obs["is_terminal"] and obs["reward"] < 0
    env = CrafterEnv(seed=0, symbolic=True, length=5)
    flags = [env.step({"action": 0, "reset": t == 0}) for t in range(6)]
    assert [o["is_last"] for o in flags] == [False] * 5 + [True]
    assert not any(o["is_terminal"] for o in flags)


def test_seeded_worlds_repeat(crafter) -> None:
    first = [CrafterEnv(seed=7).step({"action": 0, "reset": True})["image"] for _ in range(2)]
    assert np.array_equal(first[0], first[1])
    other = CrafterEnv(seed=8).step({"action": 0, "reset": True})["image"]
    assert not np.array_equal(first[0], other)


def test_seeded_episodes_repeat_step_for_step(crafter) -> None:
    """crafter's chunk sets iterate in memory-address order; the wrapper's order makes seeded play repeat."""

    def play() -> np.ndarray:
        env = CrafterEnv(seed=100_000, symbolic=True, length=400)
        actions = np.random.default_rng(0).integers(0, 17, 400)
        steps = [env.step({"action": 0, "reset": True})["vector"]]
        steps += [env.step({"action": int(a)})["vector"] for a in actions[:300]]
        return np.stack(steps)

    runs = [play() for _ in range(3)]
    assert all(np.array_equal(runs[0], other) for other in runs[1:])
