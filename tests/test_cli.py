"""End-to-end tests of the ``reverie`` command: train, eval, check-env, errors, help and resume after SIGKILL.

Most run ``reverie.cli.main`` in-process; the resume test runs the CLI as a subprocess so that it can kill it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reverie.agent import Dreamer
from reverie.checkpoint import find_checkpoint
from reverie.cli import main
from reverie.config import ConfigError, all_keys, field_docs, load_presets, make_config
from reverie.logger import read_jsonl
from reverie.replay import Replay


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of ``stdout``."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def meta(run: Path) -> dict[str, Any]:
    """The meta.json of a run's checkpoint."""
    return json.loads((find_checkpoint(run) / "meta.json").read_text())


def replay_steps(run: Path) -> int:
    """Steps a fresh ``Replay`` loads from the run's replay folder (debug preset: chunks of 64)."""
    return len(Replay(run / "replay", chunk=64))


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str], one_line: Any, *needles: str) -> str:
    """Run the CLI, expect exit code 2 and one ``reverie: error:`` line on stderr naming every needle."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    one_line(err, *needles)
    assert err.startswith("reverie: error: "), err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """``reverie train --preset debug --logdir D --steps 200``: (D, exit code, stdout). Tests must not change D."""
    logdir = tmp_path_factory.mktemp("cli") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "--preset", "debug", "--logdir", str(logdir), "--steps", "200"])
    return logdir, code, out.getvalue()


# ---------------------------------------------------------------------------------------------------
# 1-2. train, eval, check-env


def test_train_writes_a_run_folder(run: tuple[Path, int, str]) -> None:
    logdir, code, stdout = run
    assert code == 0
    result = last_json(stdout)
    assert result["env"] == "CartPole-v1" and result["env_steps"] == 200
    assert math.isfinite(result["eval/return"]) and result["eval/return"] > 0
    for name in ("config.json", "metrics.jsonl", "checkpoint/meta.json", "checkpoint/state.pt"):
        assert (logdir / name).is_file(), name
    assert sorted((logdir / "replay").glob("*.npz"))
    assert json.loads((logdir / "config.json").read_text())["train"]["steps"] == 200
    counters = meta(logdir)["train_state"]
    assert counters["env_steps"] == 200 and counters["updates"] > 0
    rows = read_jsonl(logdir / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss/dyn" in r] == [100, 200]
    assert rows[-1]["eval/return"] == result["eval/return"]
    assert replay_steps(logdir) == 200


def test_eval(run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]) -> None:
    logdir = run[0]
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(logdir), "--episodes", "2"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["env"] == "CartPole-v1"
    assert math.isfinite(result["eval/return"]) and result["eval/length"] >= 1
    assert main(["eval", "--ckpt", str(logdir / "checkpoint"), "--episodes", "1", "--stochastic"]) == 0
    assert math.isfinite(last_json(capsys.readouterr().out)["eval/return"])


def test_check_env(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["check-env", "CartPole-v1"]) == 0
    assert "CartPole-v1: passes the Reverie env contract" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# 3. One-line errors, exit code 2


def test_error_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any) -> None:
    argv = ["train", "--preset", "debug", "--set", "train.bach_size=3", "--logdir", tmp_path / "x"]
    cli_error(capsys, argv, one_line, "train.bach_size", "train.batch_size")
    assert not (tmp_path / "x").exists()


def test_error_unknown_preset(capsys: pytest.CaptureFixture[str], one_line: Any) -> None:
    cli_error(capsys, ["train", "--preset", "debgu"], one_line, "debgu", "debug")


@pytest.mark.parametrize("device", ["gpu", "cuda:99"])
def test_error_device_that_is_not_here(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    argv = ["train", "--preset", "debug", "--set", f"train.device={device}", "--logdir", tmp_path / "x"]
    cli_error(capsys, argv, one_line, f"train.device={device}" if device != "gpu" else "'gpu'", "auto")


def test_error_unknown_env(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any) -> None:
    argv = ["train", "--preset", "debug", "--env", "CartPol-v1", "--logdir", tmp_path / "x"]
    cli_error(capsys, argv, one_line, "CartPol-v1", "CartPole-v1")


def test_error_corrupt_checkpoint_in_eval(
    run: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    ckpt = shutil.copytree(run[0] / "checkpoint", tmp_path / "ckpt")
    (ckpt / "state.pt").write_bytes(b"this is not a torch file")
    cli_error(capsys, ["eval", "--ckpt", ckpt], one_line, str(ckpt / "state.pt"))


def test_error_eval_without_episodes(
    run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    for flag, value in (("--episodes", "0"), ("--promise-every", "-1")):
        cli_error(capsys, ["eval", "--ckpt", run[0], flag, value], one_line, "--episodes >= 1 and --promise-every >= 0")
    agent = Dreamer.load(run[0])
    with pytest.raises(ValueError, match="episodes >= 1"):
        agent.evaluate(episodes=0)


def test_error_resume_without_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any) -> None:
    cli_error(capsys, ["train", "--preset", "debug", "--logdir", tmp_path, "--resume"], one_line, str(tmp_path))


def test_error_new_run_over_existing_one(
    run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    logdir = run[0]
    before = (logdir / "checkpoint" / "meta.json").read_text()
    cli_error(capsys, ["train", "--preset", "debug", "--logdir", logdir, "--steps", "300"], one_line, "--resume")
    assert (logdir / "checkpoint" / "meta.json").read_text() == before


def test_run_killed_before_first_save_can_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    """A folder with a replay but no checkpoint yet (a kill before the first save): nothing to resume, one line
    says so; started again without --resume, the run goes on in that folder."""
    (tmp_path / "replay").mkdir()
    argv = ["train", "--preset", "debug", "--logdir", str(tmp_path), "--steps", "16", "--set", "run.eval_episodes=1"]
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    one_line(capsys.readouterr().err, "Nothing to resume", "no checkpoint yet", "Drop --resume")
    assert main(argv) == 0, capsys.readouterr().err
    assert meta(tmp_path)["train_state"]["env_steps"] == 16


def test_resume_a_moved_run_writes_to_its_new_folder(
    run: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint's run.logdir still names the folder the run was trained in; --resume writes to --logdir."""
    moved = shutil.copytree(run[0], tmp_path / "moved")
    assert json.loads((moved / "checkpoint" / "config.json").read_text())["run"]["logdir"] == str(run[0])
    before = {p: p.read_bytes() for p in run[0].rglob("*") if p.is_file()}
    argv = ["train", "--logdir", str(moved), "--resume", "--steps", "208", "--set", "run.eval_episodes=1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert {p: p.read_bytes() for p in run[0].rglob("*") if p.is_file()} == before  # the old folder untouched
    assert meta(moved)["train_state"]["env_steps"] == 208


def test_resume_without_replay_refills_it_before_updating(
    run: tuple[Path, int, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    logdir = tmp_path / "run"  # the checkpoint was copied, its replay was not
    shutil.copytree(run[0] / "checkpoint", logdir / "checkpoint")
    argv = ["train", "--logdir", str(logdir), "--resume", "--steps", "216", "--set", "run.eval_episodes=1"]
    with caplog.at_level(logging.WARNING, logger="reverie"):
        assert main(argv) == 0, capsys.readouterr().err
    assert any("acting without updates until it does" in r.getMessage() for r in caplog.records)
    state = meta(logdir)["train_state"]
    before = meta(run[0])["train_state"]
    assert state["env_steps"] == 216 and replay_steps(logdir) == 16  # the new steps refill the replay
    assert before["updates"] < state["updates"]  # and updates went on once it held a sequence


def test_unknown_key_hint_names_a_working_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as err:
        make_config([], ["nothing.like_this=1"])
    message = str(err.value)
    assert "`reverie " in message, message
    command = message.split("`")[1].split()
    with pytest.raises(SystemExit) as done:
        main(command[1:])
    assert done.value.code == 0


# ---------------------------------------------------------------------------------------------------
# 4. Resume after SIGKILL (acceptance criterion)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path: Path) -> None:
    logdir = tmp_path / "run"
    env = dict(os.environ)
    cli = [sys.executable, "-m", "reverie.cli", "train", "--logdir", str(logdir)]
    # A quarter of the debug train ratio keeps the two processes within ~20 s on 2 busy cores.
    settings = ["--set", "run.save_every=200", "run.log_every=100", "train.train_ratio=8"]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([*cli, "--preset", "debug", "--steps", "1200", *settings], stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 300
        saved = 0
        while saved < 400:
            assert first.poll() is None, f"train exited early:\n{(tmp_path / 'first.log').read_text()}"
            assert time.monotonic() < deadline, "no checkpoint at 400 env steps in time"
            time.sleep(0.05)
            with contextlib.suppress(OSError, ValueError, KeyError):  # mid-save: the folder is being swapped
                saved = json.loads((logdir / "checkpoint" / "meta.json").read_text())["train_state"]["env_steps"]
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()

    at_kill = meta(logdir)["train_state"]
    kill_steps = at_kill["env_steps"]
    assert kill_steps >= 400, at_kill
    kill_replay = replay_steps(logdir)
    kill_rows = len(read_jsonl(logdir / "metrics.jsonl"))
    assert kill_replay > 0

    done = subprocess.run([*cli, "--resume"], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, f"resume exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    result = last_json(done.stdout)
    assert result["env_steps"] >= 1200 and math.isfinite(result["eval/return"])

    final = meta(logdir)["train_state"]
    assert final["env_steps"] >= 1200
    assert final["updates"] > at_kill["updates"]
    assert final["runs"] == at_kill["runs"] + 1

    # The metrics curve continues after the checkpoint's step up to the budget.
    rows = read_jsonl(logdir / "metrics.jsonl")[kill_rows:]
    steps = [row["step"] for row in rows]
    assert steps and steps[0] > kill_steps and steps[-1] >= 1200, steps
    assert steps == sorted(steps), steps
    assert any("train/loss/dyn" in row for row in rows)

    # No replay data lost: what was on disk at the kill is still there, plus the steps of the resumed run.
    assert replay_steps(logdir) >= kill_replay + (final["env_steps"] - kill_steps)


# ---------------------------------------------------------------------------------------------------
# 5. --help documents the config keys


def test_train_help_lists_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    docs = field_docs()
    assert set(docs) == set(all_keys()), "every config key needs a one-line docstring"
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip() and "." in line.split()[0]}
    for key in all_keys():
        assert key in lines, f"{key} missing from --help"
        assert docs[key] in lines[key], f"{key}: docstring missing from --help"
    assert "Sequences per batch." in lines["train.batch_size"]
    listed = out.split("presets (--preset NAME", 1)[1].split("config keys", 1)[0]
    assert {name.strip(" ,\n") for name in listed.split("):", 1)[1].split(",")} == set(load_presets())
