"""Shared helpers of the integration tests: tiny ``debug`` configs and checks on one-line errors."""

from __future__ import annotations

import os

# Before torch is imported: spinning OpenMP threads slow everything else down on a shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from reverie.config import Config, make_config  # noqa: E402

DebugConfig = Callable[..., Config]


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
    """:func:`assert_one_line` as a fixture, so that test modules need not import conftest."""
    return assert_one_line
