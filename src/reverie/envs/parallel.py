"""Batches of envs behind one ``step``: serial in-process or one worker process per env.

Both classes take a list of env factories and share one API: ``obs_space`` / ``act_space`` (of one
env), ``num_envs``, ``step(actions) -> obs`` on stacked ``(N, ...)`` arrays (NaN and inf set to 0, the envs
listed in ``last_nonfinite``), ``last_restarts`` and
``close()``. :class:`ParallelEnv` restarts workers that die, raise or hang, so that one broken
simulator does not end a long run.

Example:
    >>> from functools import partial
    >>> from reverie.envs import GymEnv
    >>> envs = BatchEnv([partial(GymEnv, "CartPole-v1", seed=i) for i in range(2)])
    >>> obs = envs.step({"action": np.zeros(2, np.int64), "reset": np.ones(2, bool)})
    >>> obs["vector"].shape, obs["is_first"].tolist()
    ((2, 4), [True, True])
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from reverie.envs.base import Env, Space, sanitize
from reverie.envs.errors import EnvError

__all__ = ["BatchEnv", "ParallelEnv"]

logger = logging.getLogger("reverie.envs")

EnvFactory = Callable[[], Env]


def _stack(results: Sequence[dict[str, Any]], spaces: dict[str, Space]) -> dict[str, np.ndarray]:
    return {key: np.stack([np.asarray(r[key], space.dtype) for r in results]) for key, space in spaces.items()}


def _unstack(actions: dict[str, Any], index: int) -> dict[str, Any]:
    return {"action": actions["action"][index], "reset": bool(actions["reset"][index])}


def _check_batch(actions: dict[str, Any], num_envs: int) -> None:
    for key in ("action", "reset"):
        if key not in actions or len(actions[key]) != num_envs:
            raise EnvError(f"step() needs actions['{key}'] with a leading axis of {num_envs} (one per env).")


def _signature(spaces: dict[str, Space]) -> dict[str, tuple[Any, ...]]:
    return {k: (np.dtype(s.dtype), tuple(s.shape), s.discrete) for k, s in spaces.items()}


def _same_spaces(spaces: list[tuple[dict[str, Space], dict[str, Space]]]) -> None:
    """Batched envs must agree on keys, dtypes, shapes and discreteness (bounds may differ)."""
    first = [_signature(s) for s in spaces[0]]
    for i, pair in enumerate(spaces[1:], 1):
        if [_signature(s) for s in pair] != first:
            raise EnvError(f"Env {i} has other observation or action spaces than env 0; batch envs must match.")


class BatchEnv:
    """Steps ``len(factories)`` envs one after the other in this process.

    Exceptions of an env propagate (``last_restarts`` is always empty); use :class:`ParallelEnv`
    for crash recovery.

    Args:
        factories: callables that each build one env.

    Example:
        >>> envs = BatchEnv([lambda: GymEnv("CartPole-v1")])  # doctest: +SKIP
    """

    def __init__(self, factories: Sequence[EnvFactory]) -> None:
        if not factories:
            raise EnvError("BatchEnv needs at least one env factory.")
        self.envs = [factory() for factory in factories]
        _same_spaces([(env.obs_space, env.act_space) for env in self.envs])
        self.last_restarts: list[int] = []
        self.last_nonfinite: list[int] = []
        """Envs whose last step held NaN or inf values, which :func:`reverie.envs.base.sanitize` set to 0."""
        self._closed = False

    @property
    def obs_space(self) -> dict[str, Space]:
        return self.envs[0].obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        return self.envs[0].act_space

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def step(self, actions: dict[str, Any]) -> dict[str, np.ndarray]:
        """Step every env; ``actions`` holds ``action`` (N, ...) and ``reset`` (N,) bool."""
        _check_batch(actions, self.num_envs)
        results = [env.step(_unstack(actions, i)) for i, env in enumerate(self.envs)]
        obs = _stack(results, self.obs_space)
        self.last_nonfinite = sanitize(obs)
        return obs

    def close(self) -> None:
        """Close every env. Safe to call twice."""
        if not self._closed:
            self._closed = True
            for env in self.envs:
                env.close()

    def __enter__(self) -> BatchEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _single_threaded_environ() -> Iterator[None]:
    """Spawned children copy ``os.environ`` at start and may import torch before any of our code runs
    (unpickling the target imports the ``reverie`` package), so the thread limits are set around it."""
    saved = {key: os.environ.get(key) for key in _THREAD_VARS}
    os.environ.update({key: "1" for key in _THREAD_VARS})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker(conn: Connection, payload: bytes) -> None:
    """Process entry: build the env, then answer ``("step", action)`` until ``("close", None)``.

    Replies are ``("ok", value)`` or ``("error", traceback)``; after an error the worker exits.
    """
    os.environ.update({key: "1" for key in _THREAD_VARS})
    env = None
    try:
        factory = pickle.loads(payload)
        env = factory()
        if "torch" in sys.modules:  # after the factory, which may import torch
            sys.modules["torch"].set_num_threads(1)
        conn.send(("ok", (env.obs_space, env.act_space)))
        while True:
            command, data = conn.recv()
            if command == "close":
                break
            conn.send(("ok", env.step(data)))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # the parent went away or is shutting down
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
        conn.close()


def _first_line(reason: object) -> str:
    text = str(reason).strip()
    return text.splitlines()[-1] if text else "no message"  # a traceback's last line names the error


class _WorkerCrash(Exception):
    """A worker died, raised or did not answer in time."""


class ParallelEnv:
    """Runs each env in its own worker process and restarts workers that crash.

    Workers use the ``spawn`` start method (safe with torch) and one thread each. A worker that
    dies, raises in ``step`` or does not answer within ``timeout`` seconds is replaced by a new
    process from the same factory; its env is reset, the returned observation for that index is
    the fresh reset observation (``is_first=True``), the index is listed in ``last_restarts`` and a
    warning with the error text is logged on ``reverie.envs``.

    Args:
        factories: picklable callables that each build one env (module-level functions or
            ``functools.partial`` of them; lambdas and closures cannot cross processes).
        max_restarts: give up with :class:`EnvError` once one index has crashed more often than this.
        timeout: seconds to wait for a worker's answer to ``step`` before counting it as crashed.
        start_timeout: seconds a new worker may take to import and build its env (spawned
            processes re-import everything, which is slow on a busy machine).

    Example:
        >>> from functools import partial
        >>> from reverie.envs import GymEnv
        >>> factories = [partial(GymEnv, "CartPole-v1", seed=i) for i in range(2)]
        >>> with ParallelEnv(factories) as envs:  # doctest: +SKIP
        ...     obs = envs.step({"action": np.zeros(2, np.int64), "reset": np.ones(2, bool)})
    """

    def __init__(
        self,
        factories: Sequence[EnvFactory],
        max_restarts: int = 10,
        timeout: float = 60.0,
        start_timeout: float = 120.0,
    ) -> None:
        if not factories:
            raise EnvError("ParallelEnv needs at least one env factory.")
        self._closed = True  # until the workers exist, close() has nothing to do
        self._payloads = [_pickle_factory(f, i) for i, f in enumerate(factories)]
        self._ctx = mp.get_context("spawn")
        self.max_restarts = max_restarts
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.restarts = [0] * len(factories)
        self.last_restarts: list[int] = []
        self.last_nonfinite: list[int] = []
        self._procs: list[Any] = [None] * len(factories)
        self._conns: list[Any] = [None] * len(factories)
        self._closed = False
        for i in range(len(factories)):
            self._start(i)
        deadline = time.monotonic() + start_timeout
        spaces = []
        for i in range(len(factories)):
            try:
                spaces.append(self._receive(i, deadline))
            except _WorkerCrash as err:
                self.close()
                raise EnvError(f"Env worker {i} failed to start: {_first_line(err)}") from None
        _same_spaces(spaces)
        self._obs_space, self._act_space = spaces[0]

    @property
    def obs_space(self) -> dict[str, Space]:
        return self._obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        return self._act_space

    @property
    def num_envs(self) -> int:
        return len(self._procs)

    def step(self, actions: dict[str, Any]) -> dict[str, np.ndarray]:
        """Step every worker at once; ``actions`` holds ``action`` (N, ...) and ``reset`` (N,) bool."""
        if self._closed:
            raise RuntimeError("ParallelEnv.step() after close(); build a new ParallelEnv.")
        _check_batch(actions, self.num_envs)
        crashed: dict[int, str] = {}
        for i, conn in enumerate(self._conns):
            try:
                conn.send(("step", _unstack(actions, i)))
            except OSError as err:
                crashed[i] = f"cannot send to the worker ({err})"
        deadline = time.monotonic() + self.timeout
        results: list[Any] = [None] * self.num_envs
        for i in range(self.num_envs):
            if i not in crashed:
                try:
                    results[i] = self._receive(i, deadline)
                except _WorkerCrash as err:
                    crashed[i] = str(err)
        for i, obs in self._restart(crashed).items():
            results[i] = obs
        self.last_restarts = sorted(crashed)
        obs = _stack(results, self._obs_space)
        self.last_nonfinite = sanitize(obs)
        return obs

    def close(self) -> None:
        """Stop all workers (politely, then by force). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            with contextlib.suppress(OSError, AttributeError):
                conn.send(("close", None))
        for i in range(self.num_envs):
            self._stop(i, grace=1.0)

    def __enter__(self) -> ParallelEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _start(self, i: int) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(child, self._payloads[i]), daemon=True)
        with _single_threaded_environ():
            proc.start()
        child.close()  # so that the parent sees EOF when the worker dies
        self._procs[i], self._conns[i] = proc, parent

    def _stop(self, i: int, grace: float = 0.0) -> None:
        proc, conn = self._procs[i], self._conns[i]
        if proc is not None:
            proc.join(grace)
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if conn is not None:
            conn.close()

    def _receive(self, i: int, deadline: float) -> Any:
        conn, proc = self._conns[i], self._procs[i]
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise _WorkerCrash("no answer within the timeout (hung or too slow worker)")
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            proc.join(1.0)
            raise _WorkerCrash(f"worker process died (exit code {proc.exitcode})") from None
        if status == "error":
            raise _WorkerCrash(f"the env raised:\n{value}")
        return value

    def _restart(self, crashed: dict[int, str]) -> dict[int, dict[str, Any]]:
        """Replace the crashed workers (all at once) until their envs reset; returns their reset obs.

        Gives up with :class:`EnvError` when one index has crashed more than ``max_restarts`` times.
        """
        space = self._act_space["action"]
        reset = {"action": np.zeros(space.shape, space.dtype), "reset": True}
        results: dict[int, dict[str, Any]] = {}
        while crashed:
            for i, reason in sorted(crashed.items()):
                self.restarts[i] += 1
                if self.restarts[i] > self.max_restarts:
                    self.close()
                    raise EnvError(
                        f"Env worker {i} crashed more than max_restarts={self.max_restarts} times; giving up (the run "
                        f"is saved). Last error: {_first_line(reason)}"
                    )
                logger.warning("Env worker %d crashed, restarting it (restart %d): %s", i, self.restarts[i], reason)
                self._stop(i)
                self._start(i)
            failed: dict[int, str] = {}
            deadline = time.monotonic() + self.start_timeout
            for i in crashed:
                try:
                    self._receive(i, deadline)  # the new worker's spaces: it is ready
                    self._conns[i].send(("step", reset))
                except (_WorkerCrash, OSError) as err:
                    failed[i] = str(err)
            deadline = time.monotonic() + self.timeout
            for i in set(crashed) - set(failed):
                try:
                    results[i] = dict(self._receive(i, deadline))
                except _WorkerCrash as err:
                    failed[i] = str(err)
            crashed = failed
        return results


def _pickle_factory(factory: EnvFactory, index: int) -> bytes:
    try:
        return pickle.dumps(factory)
    except Exception as err:
        raise EnvError(
            f"Env factory {index} ({factory!r}) cannot be pickled for a worker process ({err}); use a "
            "module-level function or functools.partial of one, or BatchEnv for in-process envs."
        ) from None
