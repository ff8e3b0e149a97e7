"""The one error family of bad input: what a user can mend gets one line that names the problem and the fix.

Every error Reverie raises for a wrong config value, env id, dataset, checkpoint, replay, policy, port or request
is a :class:`ReverieError` (and a ``ValueError``, for callers that catch those). The command line prints its
message on one line and exits with status 2; anything else that escapes is a bug and keeps its traceback.

Example:
    >>> from reverie.config import ConfigError
    >>> issubclass(ConfigError, ReverieError) and issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations

__all__ = ["ReverieError"]


class ReverieError(ValueError):
    """Bad input or a damaged file the user can mend; the message is one line naming the problem and the fix."""
