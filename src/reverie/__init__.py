"""Reverie: agents that learn inside world models.

The top-level names are imported lazily, so that env worker processes (which unpickle factories from
``reverie.envs``) do not pay for importing torch and the agent.
"""

import os
from typing import TYPE_CHECKING, Any

# Two busy-waiting OpenMP pools on two cores can run 10-40x slower; this must precede torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
