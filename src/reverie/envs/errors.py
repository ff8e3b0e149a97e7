"""Errors and warnings of the env layer.

Example:
    >>> issubclass(EnvError, ValueError)
    True
"""

from __future__ import annotations

from reverie.errors import ReverieError


class EnvError(ReverieError):
    """An env id, space or observation breaks the contract of :mod:`reverie.envs.base`.

    The message is one line that names the problem and the fix.
    """


class EnvWarning(UserWarning):
    """A legal but learning-hostile env choice found by :func:`reverie.envs.check_env`."""
