"""What the probes of fitted offline Crafter runs share: checking the run folders they read and recording the
held-out episodes they measure on, once (``offline_craft_probe.py``, ``offline_reward_probe.py``,
``offline_advantage_probe.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def check_runs(parser: argparse.ArgumentParser, runs: list[Path]) -> None:
    """Exit with a clear message unless every folder holds a checkpoint of ``research/offline_crafter_tagged.py``."""
    for run in runs:
        if not (run / "checkpoint").exists():
            parser.error(f"{run} holds no checkpoint/: give run folders that research/offline_crafter_tagged.py wrote")


def held_out(folder: Path, policy: str, episodes: int, seed: int) -> Any:
    """The held-out symbolic dataset in ``folder``, recorded with ``policy`` (``episodes`` from ``seed``, 500
    steps at most) by the first call; the training sets use seeds 0-999, so ``seed`` >= 1000 gives games they
    never saw."""
    from reverie.data import Dataset, record

    if (folder / "dataset.json").exists():  # recorded by an earlier call
        return Dataset(folder)
    return record("crafter-symbolic", policy, episodes, folder, seed=seed, time_limit=500)
