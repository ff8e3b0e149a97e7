"""Dream studio: play inside a checkpoint's world model in the browser.

``reverie studio --ckpt RUN`` serves one page at http://127.0.0.1:8765/ (see ``docs/studio.md``). The
pieces: :class:`~reverie.studio.session.Session` (the message protocol, no web code),
:class:`~reverie.studio.server.Studio` (the aiohttp app; ``pip install "reverie[studio]"``) and
:class:`~reverie.studio.recorder.TakeRecorder` (recorded sessions as Reverie datasets).

Example:
    >>> from reverie.studio import Studio           # doctest: +SKIP
    >>> Studio("runs/crafter").run(port=8765)       # doctest: +SKIP
    >>> Studio("runs/crafter", start="data/crafter-random").run()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reverie.studio.recorder import TakeRecorder
from reverie.studio.session import ProtocolError, Session

if TYPE_CHECKING:
    from reverie.studio.server import Studio, serve_in_thread

__all__ = ["INSTALL", "ProtocolError", "Session", "Studio", "TakeRecorder", "serve_in_thread"]

INSTALL = 'pip install "reverie[studio]"'
"""The pip command that installs the studio's web server (aiohttp)."""


def __getattr__(name: str) -> Any:
    if name in ("Studio", "serve_in_thread"):
        try:
            from reverie.studio import server
        except ImportError as err:
            raise ImportError(f"The studio's web server needs aiohttp ({err}): {INSTALL}") from None
        return getattr(server, name)
    raise AttributeError(f"module 'reverie.studio' has no attribute {name!r}")
