"""Reverie: agents that learn inside world models.

The top-level names are imported lazily, so that env worker processes (which unpickle factories from
``reverie.envs``) do not pay for importing torch and the agent.
"""

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads wait for work with a spin of 30,000 rounds (about a millisecond here), then sleep: long enough to
# stay awake through the gaps between the ops of one update, short enough to sleep while the loop steps its envs. A
# 1,000-round spin (~45 us) made eager and compiled updates 1.3-1.6x slower (ops woke sleeping threads); unbounded
# busy-waiting makes two busy multi-threaded processes on a few shared cores run 10-40x slower. Read when torch loads
# OpenMP: import reverie first, or set OMP_WAIT_POLICY yourself (PASSIVE when processes share the cores; docs/speed.md).
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "30000")

# torch.compile keeps what it compiled in a folder that survives a reboot (torch's default is under /tmp), so that a
# later run of the same model, a resumed one included, loads it instead of compiling for minutes. Torch reads this
# when it first compiles anything, so it is set here.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_cache, "reverie", "torch-compile")

from reverie.version import __version__  # noqa: E402

_LAZY = {
    "Dreamer": "reverie.agent",
    "Config": "reverie.config",
    "ConfigError": "reverie.config",
    "make_config": "reverie.config",
    "check_env": "reverie.envs",
}
__all__ = ["Config", "ConfigError", "Dreamer", "__version__", "check_env", "make_config"]

if TYPE_CHECKING:
    from reverie.agent import Dreamer
    from reverie.config import Config, ConfigError, make_config
    from reverie.envs import check_env


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reverie' has no attribute {name!r}")
