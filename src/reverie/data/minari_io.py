"""Export Reverie datasets to Minari and import Minari datasets (``pip install "minari[hdf5]>=0.5.4"``).

Minari stores an episode of ``N`` transitions as ``N + 1`` observations and ``N`` actions, rewards,
terminations and truncations. A Reverie episode of ``T`` steps maps onto it with ``N = T - 1``:

* ``observations[t]`` = the model keys of step ``t`` (one key: its array; several: a ``Dict`` space,
  keys with ``/`` nested);
* ``actions[t - 1]``, ``rewards[t - 1]`` = ``action[t]``, ``reward[t]`` (what led to step ``t``);
* ``terminations[t - 1]`` = ``is_terminal[t]``; ``truncations[t - 1]`` = ``is_last[t] and not is_terminal[t]``;
* ``infos["log"][name][t]`` = the ``log/name`` key of step ``t`` (``N + 1`` entries, as Minari's own infos);
* episode metadata ``has_actions`` / ``has_rewards``: the label flags (dropped labels are zeros);
* dataset metadata ``reverie``: env id, spaces and keys, so that importing gives back identical data.

Images are written with ``jpeg_encoding=False``: Minari's default JPEG changes most pixels. Writing uses
``minari.create_dataset_from_buffers`` with ``EpisodeBuffer`` objects built from whole arrays, and then the
storage's ``update_episodes`` on a generator (one episode in memory), so JAX (``minari[create]``, which
``DataCollector`` needs) is not needed. Datasets live under ``MINARI_DATASETS_PATH`` (default
``~/.minari/datasets``).

Example:
    >>> export_minari("data/crafter-random", "reverie/crafter-random-v0")       # doctest: +SKIP
    >>> import_minari("reverie/crafter-random-v0", "data/crafter-random-again")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from reverie.data.dataset import Dataset, label_flags
from reverie.data.format import DatasetError, label_plan, spaces_from_json
from reverie.data.writer import DatasetWriter
from reverie.envs.base import Space, reserved_spaces
from reverie.errors import ReverieError

__all__ = ["MINARI_INSTALL", "MinariMissing", "export_minari", "import_minari", "minari_id"]

MINARI_INSTALL = 'pip install "minari[hdf5]>=0.5.4"'
"""The pip command for Minari with its HDF5 storage (0.5.4 added ``jpeg_encoding``)."""


class MinariMissing(ReverieError, ImportError):
    """Minari (with h5py) is not installed or too old; the message has the pip command."""


def _import_minari() -> Any:
    try:
        import h5py  # noqa: F401 (Minari's HDF5 storage needs it)
        import minari
    except ImportError as err:
        raise MinariMissing(f"Minari import/export needs Minari with HDF5 storage ({err}): {MINARI_INSTALL}") from None
    if "jpeg_encoding" not in inspect.signature(minari.create_dataset_from_buffers).parameters:
        raise MinariMissing(
            f"Minari {minari.__version__} cannot store images losslessly (no jpeg_encoding option): {MINARI_INSTALL}"
        )
    return minari


def minari_id(name: str) -> str:
    """A Minari dataset id from a short name: ``crafter`` -> ``reverie/crafter-v0``; full ids pass unchanged.

    Example:
        >>> minari_id("crafter"), minari_id("me/cartpole-v2")
        ('reverie/crafter-v0', 'me/cartpole-v2')
    """
    name = name if "/" in name else f"reverie/{name}"
    return name if re.search(r"-v\d+$", name) else f"{name}-v0"


# ----------------------------------------------------------------- spaces
def _gym_space(space: Space) -> Any:
    """A Reverie :class:`Space` as a Gymnasium space."""
    from gymnasium import spaces

    dtype = np.dtype(space.dtype)
    if space.discrete:
        if space.shape == ():
            return spaces.Discrete(space.n)
        return spaces.MultiDiscrete(np.full(space.shape, space.n), dtype=dtype)
    if dtype == np.bool_:
        return spaces.MultiBinary(list(space.shape))
    low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape)
    high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = (
            np.nan_to_num(low, neginf=info.min, posinf=info.max),
            np.nan_to_num(high, neginf=info.min, posinf=info.max),
        )
    return spaces.Box(low.astype(dtype), high.astype(dtype), space.shape, dtype)


def _reverie_space(space: Any, where: str) -> Space:
    """A Gymnasium ``Box`` or ``Discrete`` as a Reverie :class:`Space`."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete) and int(space.start) == 0:
        return Space(np.int64, (), 0, int(space.n), discrete=True)
    if isinstance(space, spaces.Box):
        low, high = space.low, space.high
        low = low.flat[0].item() if np.all(low == low.flat[0]) else low
        high = high.flat[0].item() if np.all(high == high.flat[0]) else high
        return Space(space.dtype.type, tuple(space.shape), low, high)
    raise DatasetError(f"{where} has a {type(space).__name__} space; Reverie imports Box and Discrete (start 0).")


def _leaves(space: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(key, space)`` per leaf of a (nested) Dict space, names joined with ``/``; a bare Box gets one key."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return [leaf for k, sub in space.spaces.items() for leaf in _leaves(sub, f"{prefix}/{k}" if prefix else k)]
    if prefix:
        return [(prefix, space)]
    is_image = isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
    return [("image" if is_image else "vector", space)]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}`` (HDF5 turns ``/`` into groups anyway)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Inverse of :func:`_nest`."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}/{key}" if prefix else key).items()}


# ----------------------------------------------------------------- export
def export_minari(
    src: str | os.PathLike[str] | Dataset,
    dataset_id: str,
    action_frac: float = 1.0,
    reward_frac: float = 1.0,
    seed: int = 0,
) -> str:
    """Write a Reverie dataset as the Minari dataset ``dataset_id``; returns the id.

    Args:
        src: the Reverie dataset (folder or :class:`Dataset`).
        dataset_id: ``namespace/name-vN`` (see :func:`minari_id`), created under ``MINARI_DATASETS_PATH``.
        action_frac, reward_frac, seed: drop labels on the way (see :func:`reverie.data.convert.label_flags`).

    Raises:
        MinariMissing: Minari is missing or too old (the message has the pip command).
        DatasetError: a Minari dataset with this id exists already.
    """
    minari = _import_minari()
    from minari.storage.datasets_root_dir import get_dataset_path

    ds = src if isinstance(src, Dataset) else Dataset(src)
    if get_dataset_path(dataset_id).exists():
        raise DatasetError(
            f"Minari dataset '{dataset_id}' exists already at {get_dataset_path(dataset_id)}; choose another id "
            f"(or another version, -v1) or delete it (`minari delete {dataset_id}`)."
        )
    info = ds.info
    model, logs = info["model_keys"], info["log_keys"]
    has_actions, has_rewards = label_flags(ds, action_frac, reward_frac, seed)
    obs_spaces = {k: _gym_space(ds.obs_space[k]) for k in model}
    if len(model) == 1:
        obs_space = obs_spaces[model[0]]
    else:
        obs_space = _dict_space(_nest(obs_spaces))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about every optional field (author, permalink...)
        mds = minari.create_dataset_from_buffers(
            dataset_id,
            [],
            observation_space=obs_space,
            action_space=_gym_space(ds.act_space["action"]),
            algorithm_name=str(info["creation"].get("policy", info["creation"].get("source", "reverie"))),
            description=f"Exported by Reverie from {ds.folder} (env '{ds.env_id}', {len(ds)} episodes).",
            data_format="hdf5",
            jpeg_encoding=False,
        )
    try:
        mds.storage.update_episodes(_buffers(ds, model, logs, has_actions, has_rewards))
        flags = [
            {"has_actions": bool(a), "has_rewards": bool(r)} for a, r in zip(has_actions, has_rewards, strict=True)
        ]
        mds.storage.update_episode_metadata(flags, range(len(ds)))
        reverie = {k: info[k] for k in ("env_id", "obs_space", "act_space", "model_keys", "log_keys", "chunk")}
        mds.storage.update_metadata({"reverie": {**reverie, "creation": info["creation"]}})
    except BaseException:
        shutil.rmtree(get_dataset_path(dataset_id), ignore_errors=True)  # never leave half a dataset behind
        raise
    return dataset_id


def _buffers(
    ds: Dataset, model: list[str], logs: list[str], has_actions: np.ndarray, has_rewards: np.ndarray
) -> Iterator[Any]:
    """Minari ``EpisodeBuffer`` objects, one episode in memory at a time (see the module docstring)."""
    from minari.data_collector import EpisodeBuffer

    for i, ep in enumerate(ds.episodes(masks=False)):
        action = ep["action"] if has_actions[i] else np.zeros_like(ep["action"])
        reward = ep["reward"] if has_rewards[i] else np.zeros_like(ep["reward"])
        yield EpisodeBuffer(
            id=i,
            observations=ep[model[0]] if len(model) == 1 else _nest({k: ep[k] for k in model}),
            actions=action[1:],
            rewards=reward[1:],
            terminations=ep["is_terminal"][1:],
            truncations=(ep["is_last"] & ~ep["is_terminal"])[1:],
            infos=_nest({k: ep[k] for k in logs}),  # Minari's own infos hold N + 1 entries too
        )


def _dict_space(tree: dict[str, Any]) -> Any:
    from gymnasium import spaces

    return spaces.Dict({k: _dict_space(v) if isinstance(v, dict) else v for k, v in tree.items()})


# ----------------------------------------------------------------- import
def import_minari(
    dataset_id: str,
    folder: str | os.PathLike[str],
    action_frac: float = 1.0,
    reward_frac: float = 1.0,
    seed: int = 0,
    chunk: int = 1024,
) -> Dataset:
    """Write the Minari dataset ``dataset_id`` as a Reverie dataset in ``folder``, one episode at a time.

    Datasets that Reverie exported come back identical (spaces, keys, label flags, ``log/`` keys). Other
    Minari datasets need Box or Dict-of-Box observations and Box or Discrete actions; a bare Box becomes
    ``"image"`` (uint8 ``(H, W, C)``) or ``"vector"``, Dict leaves keep their names joined with ``/``, and
    their infos are not imported.

    Raises:
        MinariMissing: Minari is missing (the message has the pip command).
        DatasetError: no such Minari dataset, or spaces Reverie cannot represent.
    """
    minari = _import_minari()
    try:
        mds = minari.load_dataset(dataset_id)
    except (FileNotFoundError, ValueError) as err:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(
            f"Cannot open Minari dataset '{dataset_id}' under {root} ({err}). Check the id (`minari list local`) "
            f"and MINARI_DATASETS_PATH."
        ) from None
    meta = mds.storage.metadata
    ours = meta.get("reverie")
    if ours:
        obs_space, act_space = spaces_from_json(ours["obs_space"]), spaces_from_json(ours["act_space"])
        model, logs, env_id = list(ours["model_keys"]), list(ours["log_keys"]), ours["env_id"]
    else:
        leaves = _leaves(mds.observation_space)
        obs_space = {k: _reverie_space(s, f"Minari dataset '{dataset_id}' observation '{k}'") for k, s in leaves}
        obs_space.update(reserved_spaces())
        act_space = {"action": _reverie_space(mds.action_space, f"Minari dataset '{dataset_id}' action")}
        model, logs, env_id = [k for k, _ in leaves], [], _env_id(meta, dataset_id)
    n = mds.total_episodes
    flags = list(mds.storage.get_episode_metadata(range(n)))
    keep_actions = label_plan(n, action_frac, [seed, 0]) & [bool(f.get("has_actions", True)) for f in flags]
    keep_rewards = label_plan(n, reward_frac, [seed, 1]) & [bool(f.get("has_rewards", True)) for f in flags]
    creation = {"source": "minari", "dataset_id": dataset_id, "action_frac": action_frac, "reward_frac": reward_frac}
    writer = DatasetWriter(folder, env_id, obs_space, act_space, chunk, {**creation, "seed": seed})
    for i, ep in enumerate(mds.iterate_episodes()):
        steps = _steps(ep, model, logs, act_space["action"], f"Minari dataset '{dataset_id}' episode {i}")
        writer.add_episode(steps, bool(keep_actions[i]), bool(keep_rewards[i]))
    writer.close()
    return Dataset(folder)


def _env_id(meta: dict[str, Any], dataset_id: str) -> str:
    spec = meta.get("env_spec")
    if isinstance(spec, str):
        match = re.search(r'"id":\s*"([^"]+)"', spec)
        if match:
            return match[1]
    return f"minari:{dataset_id}"


def _steps(ep: Any, model: list[str], logs: list[str], action: Space, where: str) -> dict[str, np.ndarray]:
    """A Minari ``EpisodeData`` as Reverie steps (see the module docstring for the alignment)."""
    obs = _flat(ep.observations) if isinstance(ep.observations, dict) else {model[0]: ep.observations}
    n = len(ep.rewards)
    if any(len(obs[k]) != n + 1 for k in model):
        raise DatasetError(f"{where} has {n} rewards but not {n + 1} observations; it is not a Minari episode.")
    actions = np.asarray(ep.actions)
    steps = {k: np.asarray(obs[k]) for k in model}
    steps["action"] = np.concatenate([np.zeros((1, *action.shape), action.dtype), actions.astype(action.dtype)])
    steps["reward"] = np.concatenate([[0.0], np.asarray(ep.rewards, np.float64)]).astype(np.float32)
    term = np.asarray(ep.terminations, bool)
    steps["is_first"] = np.arange(n + 1) == 0
    steps["is_last"] = np.concatenate([[False], term | np.asarray(ep.truncations, bool)])
    steps["is_terminal"] = np.concatenate([[False], term])
    infos = _flat(ep.infos or {})
    for key in logs:
        if key not in infos or len(infos[key]) != n + 1:
            raise DatasetError(f"{where} lacks the infos entry '{key}' with {n + 1} values that its metadata lists.")
        steps[key] = np.asarray(infos[key])
    return steps
