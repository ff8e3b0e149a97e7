"""Datasets of recorded play: record them, read them in a stream, drop labels, convert to and from Minari.

A dataset is a folder::

    my-dataset/
      dataset.json                 metadata, written LAST (atomically): without it the folder is unfinished
      episodes/
        000000-0000.npz            episode 0, steps [0, chunk)
        000000-0001.npz            episode 0, steps [chunk, 2 * chunk)   (long episodes only)
        000001-0000.npz            episode 1 ...

**Episode files** (``{episode:06d}-{part:04d}.npz``) are compressed ``.npz`` zips holding one
``{key}.npy`` array per key, shaped ``(L, *shape)`` for the ``L <= chunk`` steps of that part, and are
read with ``allow_pickle=False``. Each is written to ``{name}.tmp``, fsynced and renamed into place.
The keys are those of the env contract (:mod:`reverie.envs.base`):

* the observation keys (``image``, ``vector``, ...), ``reward`` (float32), ``is_first``, ``is_last``,
  ``is_terminal`` (bool);
* ``log/`` keys, kept for evaluation and never fed to a model (Crafter: ``log/achievement_<name>``
  per-episode counters, ``log/inventory_<name>``, ``log/reward``);
* ``action``: **the action that led to this step**, as the replay stores it. Step 0 of an episode
  (``is_first``) has ``action`` = zeros and ``reward`` = 0; step ``t > 0`` holds the action taken at step
  ``t - 1`` and the reward it earned. So ``(obs[t-1], action[t], reward[t], obs[t])`` is one transition,
  and an episode of ``T`` steps has ``T - 1`` transitions.

An episode has at least 2 steps, ``is_first`` only at step 0 and ``is_last`` at most at its last step
(``is_terminal``: the task ended; ``is_last`` without it: a truncation).

**dataset.json** holds ``format`` (``"reverie-dataset"``), ``version`` (1), ``env_id``, ``obs_space``
and ``act_space`` (spaces as JSON, as in checkpoints), ``keys`` (shape and dtype per stored key),
``model_keys``, ``log_keys``, ``chunk`` (steps per file), ``episodes``, ``steps``, ``label_fracs``,
``creation`` (how it was made: source, policy, seed, Reverie version, time) and ``episode_info``: per
episode its ``length``, ``parts`` (files), ``has_actions`` / ``has_rewards``, ``return`` (None
without rewards), ``terminal`` and ``log`` (the last step's value of each scalar ``log/`` key, so that
``reverie data info`` scores Crafter without reading the episodes).

**Labels.** An episode recorded without actions or rewards (to stand in for unlabeled video) stores
zeros for them and ``has_actions`` / ``has_rewards`` = False. :class:`Dataset` adds float32
``action_mask`` / ``reward_mask`` arrays to the steps it yields: the episode's flag on every step (1 where
the label is known), which the world model's loss reads.

**Safety.** :class:`Dataset` refuses a folder without ``dataset.json`` (an interrupted write), with
episode files missing or extra, with a file whose steps or keys differ from ``dataset.json``, and a
corrupt or truncated file, each as a :class:`DatasetError` naming the folder or file and the fix.

Example:
    >>> from reverie.data import Dataset, record
    >>> ds = record("crafter", "random", episodes=3, folder="data/crafter", time_limit=200)  # doctest: +SKIP
    >>> len(ds), ds.num_steps, ds.episode(0)["action_mask"][:3]                             # doctest: +SKIP
    (3, 507, array([1., 1., 1.], dtype=float32))

See ``docs/datasets.md`` for the command line and the Minari mapping.
"""

from reverie.data.convert import convert, rewrite
from reverie.data.dataset import Dataset, label_flags
from reverie.data.format import DatasetError, label_plan
from reverie.data.minari_io import MINARI_INSTALL, MinariMissing, export_minari, import_minari, minari_id
from reverie.data.record import POLICIES, CheckpointPolicy, Policy, PolicyError, RandomPolicy, make_policy, record
from reverie.data.writer import DatasetWriter

__all__ = [
    "MINARI_INSTALL",
    "POLICIES",
    "CheckpointPolicy",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "MinariMissing",
    "Policy",
    "PolicyError",
    "RandomPolicy",
    "convert",
    "export_minari",
    "import_minari",
    "label_flags",
    "label_plan",
    "make_policy",
    "minari_id",
    "record",
    "rewrite",
]
