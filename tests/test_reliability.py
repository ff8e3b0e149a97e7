"""What Reverie promises about crashes, corruption, bad input and the studio's network exposure (docs/reliability.md).

Each test reproduces a fault found by probing the debug preset as a hostile user would: silent bit rot in a
checkpoint, one NaN poisoning a run, a run folder started afresh over an old run, DNS rebinding against the studio,
two processes on one run, tracebacks instead of one-line errors, impossible config values, a checkpoint of a GPU
machine on a CPU one, and an interrupt that lost the steps since the last save.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from reverie_fault_env import FaultEnv

from reverie import Dreamer
from reverie.checkpoint import CheckpointError, _canonical, _sha256, find_checkpoint, load_checkpoint
from reverie.cli import main
from reverie.data import Dataset, DatasetError, DatasetWriter
from reverie.envs import reserved_spaces
from reverie.learner import Learner
from reverie.replay import Replay, ReplayError

TESTS = Path(__file__).parent


def weights_finite(agent: Dreamer) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in agent.learner.state_dict().values() if v.is_floating_point())


def snapshot(agent: Dreamer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.learner.state_dict().items()}


@pytest.fixture(scope="module")
def vector_ckpt(vector_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny CartPole run's checkpoint folder, for tests that damage it."""
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    shutil.copytree(find_checkpoint(vector_run), folder)
    return folder


# --------------------------------------------------------------------------------------- 1. bit rot
def test_a_flipped_bit_anywhere_in_a_checkpoint_is_refused_in_one_line(
    vector_ckpt: Path, tmp_path: Path, one_line: Any
) -> None:
    state = (vector_ckpt / "state.pt").read_bytes()
    positions = np.random.default_rng(0).choice(len(state) * 8, 40, replace=False)  # a sample of the bits
    damaged = tmp_path / "checkpoint"
    for position in [*positions.tolist(), 0, len(state) * 8 - 1]:
        shutil.copytree(vector_ckpt, damaged, dirs_exist_ok=True)
        data = bytearray(state)
        data[position // 8] ^= 1 << (position % 8)
        (damaged / "state.pt").write_bytes(bytes(data))
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(damaged)
        one_line(str(err.value), str(damaged / "state.pt"), "corrupt")
    for name in ("config.json", "meta.json"):  # the small files are covered too: a digit changed in each
        shutil.copytree(vector_ckpt, damaged, dirs_exist_ok=True)
        text = (damaged / name).read_text()
        at = next(i for i, c in enumerate(text) if c.isdigit() and c != "1")
        (damaged / name).write_text(text[:at] + "1" + text[at + 1 :])
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(damaged)
        one_line(str(err.value), name)
    shutil.copytree(vector_ckpt, damaged, dirs_exist_ok=True)
    assert load_checkpoint(damaged)["train_state"].env_steps == 80  # the intact copy loads


# --------------------------------------------------------------------------------------- 2. NaN
@pytest.mark.parametrize("fault", ["nan_obs", "inf_obs", "nan_reward"])
def test_a_non_finite_env_step_is_zeroed_and_counted_and_never_reaches_the_weights(
    fault: str, tmp_path: Path, debug_config: Any
) -> None:
    faults = ",".join(f"{fault}@{step}" for step in (40, 70, 100, 130))  # during prefill and during training
    agent = Dreamer(debug_config(tmp_path, "train.steps=160", "run.eval_episodes=1", "run.save_every=50"))
    agent.learn(lambda: FaultEnv(faults))
    assert agent.state.nonfinite_steps == 4 and agent.state.skipped_updates == 0
    assert weights_finite(agent)
    assert np.isfinite(Replay(tmp_path / "replay", chunk=64).sample(4, 8)["reward"]).all()
    assert Dreamer.load(tmp_path).state.nonfinite_steps == 4  # counted in the checkpoint and the logs
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(row.get("env/nonfinite_steps", 0) for row in logged) == 4


def test_an_update_on_a_non_finite_batch_is_skipped_and_leaves_everything_as_it_was(debug_config: Any) -> None:
    agent = Dreamer(debug_config("unused", "model.ensemble=2"), {"vector": FaultEnv().obs_space["vector"]},
                    FaultEnv().act_space["action"])  # fmt: skip
    learner: Learner = agent.learner
    rng = np.random.default_rng(0)
    batch = {
        "vector": rng.uniform(-1, 1, (4, 8, 3)).astype(np.float32),
        "action": rng.integers(0, 2, (4, 8)),
        "reward": rng.uniform(0, 1, (4, 8)).astype(np.float32),
        "is_first": np.zeros((4, 8), bool),
        "is_terminal": np.zeros((4, 8), bool),
    }
    learner.update(batch, "online")  # calibrates the ensemble and the return scale
    before = snapshot(agent)
    moments = [s["exp_avg"].clone() for s in learner.opt.state.values()]
    for key, where in (("vector", (1, 3, 0)), ("reward", (2, 5))):
        bad = {k: v.copy() for k, v in batch.items()}
        bad[key][where] = np.nan
        metrics = learner.update(bad, "online")
        assert metrics["opt/skipped"] == 1.0
    assert learner.skipped == 2 and learner.updates == 1
    after = snapshot(agent)
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running statistics alike
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, learner.opt.state.values(), strict=True))
    assert learner.update(batch, "online")["opt/skipped"] == 0.0 and learner.updates == 2


def test_non_finite_weights_are_never_saved_over_a_good_checkpoint(
    vector_run: Path, tmp_path: Path, one_line: Any
) -> None:
    shutil.copytree(vector_run, tmp_path / "run")
    agent = Dreamer.load(tmp_path / "run")
    good = (tmp_path / "run" / "checkpoint" / "state.pt").read_bytes()
    with torch.no_grad():
        next(agent.learner.wm.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError) as err:
        agent.save(tmp_path / "run" / "checkpoint")
    one_line(str(err.value), "NaN or inf", "last good checkpoint is kept")
    assert (tmp_path / "run" / "checkpoint" / "state.pt").read_bytes() == good
    assert not (tmp_path / "run" / "checkpoint.tmp").exists()


def test_nan_in_a_dataset_is_refused_where_it_is_written_and_where_it_is_read(
    tmp_path: Path, rule_data: Any, one_line: Any
) -> None:
    spaces = {"vector": rule_data.OBS_SPACE["vector"], **reserved_spaces()}
    steps = {
        "vector": np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32),
        "action": np.r_[0, np.ones(9)].astype(np.int64),
        "reward": np.r_[0, np.ones(9)].astype(np.float32),
        "is_first": np.arange(10) == 0,
        "is_last": np.arange(10) == 9,
        "is_terminal": np.zeros(10, bool),
    }
    with DatasetWriter(tmp_path / "ds", "CartPole-v1", spaces, rule_data.DISCRETE, chunk=16) as writer:
        writer.add_episode(steps)
        broken = {**steps, "reward": steps["reward"].copy()}
        broken["reward"][4] = np.nan
        with pytest.raises(DatasetError) as err:
            writer.add_episode(broken)
        one_line(str(err.value), "Episode 1", "NaN or inf", "reward")
    # A file damaged after the fact (written by hand here) is refused when it is read.
    part = next((tmp_path / "ds" / "episodes").glob("*.npz"))
    with np.load(part) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["vector"][3, 2] = np.inf
    np.savez(part, **arrays)
    with pytest.raises(DatasetError) as err:
        list(Dataset(tmp_path / "ds").episodes())
    one_line(str(err.value), str(part), "'vector'", "NaN or inf")


def test_replay_refuses_a_non_finite_step(tmp_path: Path, one_line: Any) -> None:
    replay = Replay(None, chunk=8)
    step = {"vector": np.zeros(3, np.float32), "reward": np.float32(0), "is_first": True}
    replay.add(step)
    with pytest.raises(ReplayError) as err:
        replay.add({**step, "vector": np.array([0, np.nan, 0], np.float32)})
    one_line(str(err.value), "'vector'", "NaN or inf")
    assert len(replay) == 1


# --------------------------------------------------------------------------------------- 3. run folders
def test_a_folder_holding_only_the_old_copy_of_a_checkpoint_is_never_started_afresh(
    vector_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    run = tmp_path / "run"
    shutil.copytree(vector_run, run)
    os.replace(run / "checkpoint", run / "checkpoint.old")  # a crash between the two renames of a save
    old = (run / "checkpoint.old" / "state.pt").read_bytes()
    argv = ["train", "--preset", "debug", "--logdir", str(run), "--steps", "96", "--set", "run.eval_episodes=1"]
    capsys.readouterr()
    assert main(argv) == 2
    one_line(capsys.readouterr().err, str(run), "already holds a run", "--resume", "--overwrite")
    assert (run / "checkpoint.old" / "state.pt").read_bytes() == old and not (run / "checkpoint").exists()
    with pytest.raises(CheckpointError, match="already holds a run"):  # the Python API refuses the same way
        Dreamer(load_checkpoint(run)["config"]).learn(steps=96)
    resume = ["train", "--logdir", str(run), "--resume", "--steps", "96", "--set", "run.eval_episodes=1"]
    assert main(resume) == 0, capsys.readouterr().err  # --resume continues from the old copy
    assert load_checkpoint(run)["train_state"].env_steps == 96
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err  # --overwrite: a new run, from step 0
    assert load_checkpoint(run)["train_state"].runs == 1


def test_a_second_process_on_a_run_gets_a_one_line_error_and_a_stale_lock_blocks_nothing(
    tmp_path: Path, one_line: Any
) -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cli = [sys.executable, "-m", "reverie.cli", "train", "--logdir", str(tmp_path)]
    first = subprocess.Popen(
        [*cli, "--preset", "debug", "--steps", "100000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "checkpoint" / "meta.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.1)
        second = subprocess.run([*cli, "--resume"], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        one_line(second.stderr, str(tmp_path), "in use by process", str(first.pid))
    finally:
        first.kill()  # SIGKILL: its lock file stays behind
        first.wait()
    assert (tmp_path / ".lock").exists()
    resumed = subprocess.run([*cli, "--resume", "--steps", "100"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


# --------------------------------------------------------------------------------------- 4. the studio
def test_the_studio_refuses_requests_that_do_not_name_it_in_their_host_header(pixel_run: Path, tmp_path: Path) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    import asyncio

    from reverie.studio import Studio, serve_in_thread

    async def status(url: str, host: str, path: str, websocket: bool = False) -> int:
        headers = {"Host": host}
        if websocket:
            headers |= {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
            headers |= {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        async with aiohttp.ClientSession() as http, http.get(url + path, headers=headers) as response:
            return response.status

    studio = Studio(pixel_run, record_dir=tmp_path / "takes", seed=0)
    with serve_in_thread(studio, port=0, lifetime=60) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        assert asyncio.run(status(url, f"127.0.0.1:{port}", "")) == 200
        assert asyncio.run(status(url, f"localhost:{port}", "")) == 200
        assert asyncio.run(status(url, f"127.0.0.1:{port}", "ws", websocket=True)) == 101
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):  # a rebinding page's own host name
            assert asyncio.run(status(url, host, "")) == 403
            assert asyncio.run(status(url, host, "ws", websocket=True)) == 403


# --------------------------------------------------------------------------------------- 6-7. bad input
BAD_INPUTS = {  # argv (after ``reverie``) -> what the one error line names
    "replay_chunk 0": (["train", "--preset", "debug", "--set", "train.replay_chunk=0"], "train.replay_chunk"),
    "replay_size 0": (["train", "--preset", "debug", "--set", "train.replay_size=0"], "train.replay_size"),
    "zero width": (["train", "--preset", "debug", "--set", "model.units=0"], "model.units"),
    "zero horizon": (["train", "--preset", "debug", "--set", "ac.horizon=0"], "ac.horizon"),
    "threads -1": (["train", "--preset", "debug", "--set", "train.threads=-1"], "train.threads"),
    "steps -5": (["train", "--preset", "debug", "--steps", "-5"], "train.steps"),
    "lr -1": (["train", "--preset", "debug", "--set", "optim.lr=-1"], "optim.lr"),
    "save_every -1": (["train", "--preset", "debug", "--set", "run.save_every=-1"], "run.save_every"),
    "eval_episodes -1": (["train", "--preset", "debug", "--set", "run.eval_episodes=-1"], "run.eval_episodes"),
    "image size 50": (["train", "--preset", "debug", "--set", "env.image_size=50"], "env.image_size"),
    "record 0 episodes": (["data", "record", "--env", "CartPole-v1", "--episodes", "0", "--out", "{tmp}/d"], ">= 1"),
    "action frac 2": (
        ["data", "record", "--env", "CartPole-v1", "--episodes", "1", "--out", "{tmp}/d", "--action-frac", "2"],
        "action_frac",
    ),
    "studio port 99999": (["studio", "--ckpt", "{run}", "--port", "99999"], "--port 99999"),
    "studio context 0": (["studio", "--ckpt", "{run}", "--port", "0", "--context", "0"], "context"),
    "studio unwritable takes": (["studio", "--ckpt", "{run}", "--record-to", "{file}"], "--record-to"),
    "report of garbage": (["report", "{garbage}"], "config.json"),
    "logdir is a file": (["train", "--preset", "debug", "--logdir", "{file}"], "{file}"),
    "eval on another env": (["eval", "--ckpt", "{run}", "--env", "Pendulum-v1", "--episodes", "1"], "does not fit"),
    "resume with another size": (
        ["train", "--logdir", "{copy}", "--resume", "--set", "model.deter=64"],
        "model.deter cannot change",
    ),
    "dataset too short": (
        ["train-offline", "--data", "{short}", "--preset", "debug", "--logdir", "{tmp}/o"],
        "stretch",
    ),
    "bad meta.json": (["eval", "--ckpt", "{badmeta}"], "meta.json"),
    "non-UTF-8 config.json": (["eval", "--ckpt", "{badconfig}"], "config.json"),
    "bad dataset.json": (["data", "info", "{baddata}"], "dataset.json"),
    "corrupt replay chunk": (["train", "--logdir", "{badreplay}", "--resume", "--steps", "200"], "Replay file"),
}


@pytest.fixture(scope="module")
def scene(
    vector_run: Path, cartpole_data: Path, tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Any
) -> dict[str, str]:
    """The paths the bad inputs name: a run, copies of it to damage, a file, garbage, a short dataset."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "a-file").write_text("not a folder")
    (tmp / "garbage").mkdir()
    (tmp / "garbage" / "config.json").write_bytes(b"\xff\xfe not json")
    (tmp / "garbage" / "metrics.jsonl").write_bytes(b"\x00\x01{{{")
    names = {}
    for name in ("copy", "badmeta", "badconfig", "badreplay"):
        shutil.copytree(vector_run, tmp / name)
        names[name] = str(tmp / name)
    (tmp / "badmeta" / "checkpoint" / "meta.json").write_text("{ not json")
    (tmp / "badconfig" / "checkpoint" / "config.json").write_bytes(b"\xff\xff\xff")
    chunk = sorted((tmp / "badreplay" / "replay").glob("*.npz"))[0]
    chunk.write_bytes(chunk.read_bytes()[:100])
    shutil.copytree(cartpole_data, tmp / "baddata")
    (tmp / "baddata" / "dataset.json").write_bytes(b"\xff{")
    short = tiny_dataset("short")  # episodes of at most 13 steps; the debug preset trains on 8
    return {
        "tmp": str(tmp),
        "run": str(vector_run),
        "file": str(tmp / "a-file"),
        "garbage": str(tmp / "garbage"),
        "short": short,
        "baddata": str(tmp / "baddata"),
        **names,
    }


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_line_and_a_non_zero_exit(
    case: str, scene: dict[str, str], capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    argv, needle = BAD_INPUTS[case]
    if case == "dataset too short":  # 4 episodes of at most 13 steps: fewer than 64 in all
        argv = [*argv, "--set", "train.batch_length=64"]
    capsys.readouterr()
    code = main([a.format(**scene) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("reverie: error: ") and "Traceback" not in err
    one_line(err, needle.format(**scene))
    if case == "resume with another size":  # refused before anything is written
        assert json.loads((Path(scene["copy"]) / "config.json").read_text())["model"]["deter"] == 32


def test_a_run_whose_env_keeps_crashing_stops_in_one_line_and_keeps_its_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    env = {"REVERIE_FAULTS": ",".join(f"raise@{step}" for step in range(30, 40))}
    argv = ["train", "--preset", "debug", "--env", "reverie_fault_env:Faulty-v0", "--logdir", str(tmp_path)]
    argv += ["--steps", "400", "--set", "env.num_envs=2", "run.save_every=100000"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("PYTHONPATH", str(TESTS))
        import reverie.envs.parallel as parallel

        mp.setattr(parallel.ParallelEnv.__init__, "__defaults__", (2, 60.0, 120.0))  # max_restarts 2
        capsys.readouterr()
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    one_line(err, "crashed more than max_restarts=2 times", "injected fault")
    assert load_checkpoint(tmp_path)["train_state"].env_steps > 0  # what it had learned was saved


# --------------------------------------------------------------------------------------- 8. device portability
def test_a_checkpoint_of_a_gpu_machine_evaluates_and_resumes_here(
    vector_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(vector_run, run)
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    config["train"]["device"] = "cuda"
    (run / "checkpoint" / "config.json").write_text(json.dumps(config))
    meta = json.loads((run / "checkpoint" / "meta.json").read_text())  # as a GPU machine would have saved it
    meta["sha256"]["config.json"] = (
        __import__("hashlib").sha256((run / "checkpoint" / "config.json").read_bytes()).hexdigest()
    )

    meta["sha256"]["meta.json"] = _sha256(_canonical(meta).encode())
    (run / "checkpoint" / "meta.json").write_text(json.dumps(meta))
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run), "--episodes", "1"]) == 0, capsys.readouterr().err
    assert main(["eval", "--ckpt", str(run), "--episodes", "1", "--set", "train.device=cpu"]) == 0
    argv = ["train", "--logdir", str(run), "--resume", "--steps", "96", "--set", "run.eval_episodes=1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert load_checkpoint(run)["train_state"].env_steps == 96


# --------------------------------------------------------------------------------------- 9. interrupts
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_saves_its_last_step(signum: int, tmp_path: Path) -> None:
    env = dict(os.environ)
    cli = [sys.executable, "-m", "reverie.cli", "train", "--preset", "debug", "--logdir", str(tmp_path)]
    proc = subprocess.Popen([*cli, "--steps", "100000", "--set", "run.save_every=100000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "metrics.jsonl").exists() or (tmp_path / "metrics.jsonl").stat().st_size < 200:
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.1)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    saved = load_checkpoint(tmp_path)["train_state"].env_steps
    logged = max(json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert saved >= logged > 0  # the steps since the first save were not lost


def test_a_full_disk_or_no_memory_is_one_line_and_the_last_checkpoint_stays(
    vector_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_line: Any
) -> None:
    import errno

    import reverie.checkpoint
    import reverie.learner

    run = tmp_path / "run"
    shutil.copytree(vector_run, run)
    good = (run / "checkpoint" / "state.pt").read_bytes()

    def full(path: Path, obj: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(reverie.checkpoint, "write_torch", full)
    argv = ["train", "--logdir", str(run), "--resume", "--steps", "96", "--set", "run.eval_episodes=1"]
    capsys.readouterr()
    assert main(argv) == 2
    one_line(capsys.readouterr().err, "No space left on device", "state.pt", "free some disk space")
    assert (run / "checkpoint" / "state.pt").read_bytes() == good
    monkeypatch.undo()

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(reverie.learner.Learner, "update", no_memory)
    assert main(argv) == 2
    one_line(capsys.readouterr().err, "out of memory", "train.batch_size")


def test_no_final_evaluation_still_saves_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--preset", "debug", "--logdir", str(tmp_path), "--steps", "96", "--set", "run.eval_episodes=0"]
    assert main(argv) == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path)["train_state"].env_steps == 96


def test_actions_outside_the_action_space_are_refused_in_a_dataset(
    tmp_path: Path, rule_data: Any, one_line: Any
) -> None:
    steps = {
        "vector": np.zeros((4, 4), np.float32),
        "action": np.array([0, 1, 5, -1]),  # e.g. a Minari dataset whose actions do not fit Discrete(2)
        "reward": np.zeros(4, np.float32),
        "is_first": np.arange(4) == 0,
        "is_last": np.arange(4) == 3,
        "is_terminal": np.zeros(4, bool),
    }
    with DatasetWriter(tmp_path / "ds", "CartPole-v1", rule_data.OBS_SPACE, rule_data.DISCRETE) as writer:
        with pytest.raises(DatasetError) as err:
            writer.add_episode(steps)
        one_line(str(err.value), "Episode 0", "actions [-1, 5] outside 0..1")
        writer.add_episode({**steps, "action": np.array([0, 1, 1, 0])})


# --------------------------------------------------------------------------------------- 10. the compile cache
def test_a_damaged_compile_cache_is_one_line_that_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_line: Any
) -> None:
    """A compilation killed mid-write leaves a truncated kernel file in the compile cache, and every later compiled
    run failed on it with the compiler's traceback (seen here after a killed run). The loader's complaint about a file
    under the cache now ends the run in one line that names the file and the fix; other errors pass unchanged."""
    cache = tmp_path / "torch-compile"
    damaged = f"{cache}/s3/cs3ez.main.so"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))

    def compiled_from_a_damaged_cache(fn: Any, **kwargs: Any) -> Any:
        def run(*args: Any, **kw: Any) -> Any:
            raise ImportError(f"{damaged}: file too short")

        return run

    monkeypatch.setattr(torch, "compile", compiled_from_a_damaged_cache)
    argv = ["train", "--preset", "debug", "--logdir", str(tmp_path / "run"), "--set", "train.compile=true"]
    capsys.readouterr()
    code = main([*argv, "train.prefill=64", "train.steps=96", "run.eval_episodes=0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    one_line(err, "damaged file", damaged, f"rm -rf {cache}", "train.compile=false")

    from reverie.runtime import guard_compile_cache

    def other_failure() -> None:
        raise ImportError("no module named triton")

    with pytest.raises(ImportError, match="triton"):
        guard_compile_cache(other_failure)()
