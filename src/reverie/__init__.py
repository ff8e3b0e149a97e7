"""Reverie: agents that learn inside world models."""

__version__ = "0.1.0"

from reverie.agent import Dreamer
from reverie.config import Config, ConfigError, make_config
from reverie.envs import check_env

__all__ = ["Config", "ConfigError", "Dreamer", "check_env", "make_config"]
