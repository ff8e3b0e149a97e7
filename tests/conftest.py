"""Shared fixtures of the tests: tiny ``debug`` configs, one-line error checks, recordings with a known rule,
tiny trained runs and datasets, and a headless browser page.

Test modules never import each other or this file: what several modules need is a fixture here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reverie import Dreamer  # first: sets the OpenMP wait policy before torch loads
from reverie.config import Config, make_config
from reverie.data import Dataset, DatasetWriter, record
from reverie.envs import Space, reserved_spaces

DebugConfig = Callable[..., Config]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
PIXELS = ("env.pixels=true", "run.video_every=40", "run.log_every=20")
"""Overrides of the tiny pixel run: CartPole rendered to 64x64 frames, with an open-loop video."""


@pytest.fixture(scope="session")
def debug_config() -> DebugConfig:
    """``debug_config(logdir, *overrides)``: the ``debug`` preset with 64 prefill steps, writing to ``logdir``.

    Example:
        >>> cfg = debug_config(tmp_path, "train.steps=96")  # doctest: +SKIP
    """

    def make(logdir: str | os.PathLike[str], *overrides: str) -> Config:
        return make_config(["debug"], ["train.prefill=64", f"run.logdir={Path(logdir)}", *overrides])

    return make


def assert_one_line(message: str, *needles: str) -> None:
    """The message is a single line that mentions every needle."""
    assert message.strip(), "empty error message"
    assert "\n" not in message.strip(), f"error message spans several lines:\n{message}"
    for needle in needles:
        assert needle in message, f"{needle!r} missing from the error message: {message}"


@pytest.fixture(scope="session")
def one_line() -> Callable[..., None]:
    """:func:`assert_one_line` as a fixture."""
    return assert_one_line


# --------------------------------------------------------------------------------------- recordings with a rule
class RuleData:
    """Recordings of CartPole-like observations whose stored actions follow a known expert rule."""

    OBS_SPACE = {"vector": Space(np.float32, (4,)), **reserved_spaces()}  # CartPole's
    DISCRETE = Space(np.int64, (), 0, 2, discrete=True)
    BOX = Space(np.float32, (1,), -1.0, 1.0)

    @staticmethod
    def rule(vector: np.ndarray) -> np.ndarray:
        """The expert: push right when the pole leans right (a fair CartPole controller)."""
        return (vector[..., 2] > 0).astype(np.int64)

    @staticmethod
    def box_rule(vector: np.ndarray) -> np.ndarray:
        return np.tanh(2 * vector[..., :1]).astype(np.float32)

    @classmethod
    def write(
        cls,
        folder: Path,
        labelled: list[bool],
        act_space: Space | None = None,
        expert: Callable[..., Any] | None = None,
    ) -> Dataset:
        """Episodes of 40 random observations whose next stored action is ``expert(obs)`` (default: :meth:`rule`);
        ``labelled[i]`` says whether episode ``i`` keeps its actions."""
        act_space = act_space or cls.DISCRETE
        expert = expert or cls.rule
        with DatasetWriter(folder, "CartPole-v1", cls.OBS_SPACE, act_space, chunk=16) as writer:
            for i, has_actions in enumerate(labelled):
                rng = np.random.default_rng(i)
                vector = rng.normal(0, 0.5, (40, 4)).astype(np.float32)
                action = np.zeros((40, *act_space.shape), act_space.dtype)
                action[1:] = expert(vector[:-1])  # action[t] led to step t: the expert acted on obs[t - 1]
                last = np.arange(40) == 39
                reward = (np.arange(40) > 0).astype(np.float32)
                steps = {"vector": vector, "reward": reward, "is_first": np.arange(40) == 0}
                steps |= {"is_last": last, "is_terminal": last, "action": action}
                writer.add_episode(steps, has_actions=has_actions)
        return Dataset(folder)


@pytest.fixture(scope="session")
def rule_data() -> type[RuleData]:
    """:class:`RuleData`: spaces, the expert rules and ``write(folder, labelled, act_space, expert)``."""
    return RuleData


# --------------------------------------------------------------------------------------- tiny runs and datasets
def _tiny_run(factory: pytest.TempPathFactory, debug_config: DebugConfig, name: str, *overrides: str) -> Path:
    folder = factory.getbasetemp() / f"tiny-{name}"
    if not (folder / "checkpoint").exists():
        cfg = debug_config(folder, "env.id=CartPole-v1", "train.steps=80", "run.eval_episodes=1", *overrides)
        Dreamer(cfg).learn()
    return folder


@pytest.fixture(scope="session")
def pixel_run(tmp_path_factory: pytest.TempPathFactory, debug_config: DebugConfig) -> Path:
    """A run folder trained for 80 steps of CartPole rendered to 64x64 frames (:data:`PIXELS`), shared."""
    return _tiny_run(tmp_path_factory, debug_config, "pixels", *PIXELS)


@pytest.fixture(scope="session")
def vector_run(tmp_path_factory: pytest.TempPathFactory, debug_config: DebugConfig) -> Path:
    """A run folder trained for 80 steps of CartPole's vector observations, shared."""
    return _tiny_run(tmp_path_factory, debug_config, "vector")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_dataset(name, env_id="CartPole-v1", **record_kwargs)``: 4 random episodes of at most 13 steps."""

    def make(name: str, env_id: str = "CartPole-v1", **kw: Any) -> Path:
        folder = tmp_path_factory.getbasetemp() / f"data-{name}"
        if not (folder / "dataset.json").exists():
            record(env_id, "random", episodes=4, folder=folder, seed=0, time_limit=12, **kw)
        return folder

    return make


@pytest.fixture(scope="session")
def cartpole_data(tiny_dataset: Callable[..., Path]) -> Path:
    """4 random CartPole episodes, shared."""
    return tiny_dataset("cartpole")


# --------------------------------------------------------------------------------------- a browser page
@contextmanager
def _chromium_page(width: int = 1000, height: int = 400) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="browser tests need playwright: pip install playwright"
    )
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's Chromium: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            yield page
            assert not errors, errors
        finally:
            browser.close()


@pytest.fixture(scope="session")
def chromium_page() -> Callable[..., AbstractContextManager[Any]]:
    """``with chromium_page(width, height) as page``: a headless Debian Chromium page (CSP bypassed: Playwright's
    waits evaluate strings) that fails the test on page errors; skips without Playwright or Chromium."""
    return _chromium_page
