"""The studio's web server (aiohttp): one static page and one WebSocket endpoint per dream session.

Routes: ``GET /`` (the page), ``GET /static/<file>`` (its script and style) and ``GET /ws`` (the
WebSocket speaking the protocol of :mod:`reverie.studio.session`). Model work runs on one worker
thread, so the event loop stays responsive and several tabs never compete for the CPU.

Network exposure: the studio binds 127.0.0.1 by default. Every request (page and WebSocket) must name the studio
itself in its ``Host`` header (``localhost``, ``127.0.0.1``, ``[::1]`` or the bound address, at the bound port):
a DNS-rebinding page, whose requests carry its own host name, gets 403. A WebSocket whose ``Origin`` is not the
studio's own address is refused too, so a page on the web cannot drive a local studio. Binding another address
logs a warning; binding a wildcard address (``0.0.0.0``, ``::``) accepts any host name and exposes the studio to
the network.

Example:
    >>> studio = Studio("runs/crafter", record_dir="studio_recordings")   # doctest: +SKIP
    >>> studio.run("127.0.0.1", 8765)                                     # doctest: +SKIP
    >>> Studio("runs/crafter", start="data/crafter-random").run()          # doctest: +SKIP
    >>> with serve_in_thread(studio, port=0, lifetime=60) as url: ...     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from reverie.data import Dataset
from reverie.dream import DreamEnv
from reverie.errors import ReverieError
from reverie.studio.session import Session

if TYPE_CHECKING:
    from reverie.agent import Dreamer

log = logging.getLogger("reverie.studio")

STATIC = {
    "index.html": "text/html",
    "studio.js": "text/javascript",
    "studio.css": "text/css",
}
"""The page's files (package data in ``reverie/studio/static``) and their content types."""


class StudioError(ReverieError):
    """A studio setting that cannot work (context, recording folder, port); the message names the fix."""


def _check_writable(folder: Path) -> None:
    """Fail now, not after a recording: ``folder`` (created if missing) must take a file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise StudioError(
            f"Cannot save recordings in '{folder}' ({err.strerror or err}); pick a writable --record-to."
        ) from None


LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Addresses that only this machine reaches."""
WILDCARDS = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The ``Host`` header values a studio bound to ``host``:``port`` accepts: the loopback names and the bound
    address at that port; None (any) for a wildcard address.

    Example:
        >>> sorted(allowed_hosts("127.0.0.1", 8765))
        ['127.0.0.1:8765', '[::1]:8765', 'localhost:8765']
    """
    if host in WILDCARDS:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host.lower()}
    return {f"{name}:{port}" for name in names}


CSP = "default-src 'self'; img-src 'self' data:; connect-src 'self'; style-src 'self'; script-src 'self'"
"""Content-Security-Policy of the page: nothing is loaded from anywhere but the studio itself."""


class Studio:
    """A loaded checkpoint served as a web app; each WebSocket connection gets its own dream.

    Args:
        checkpoint: checkpoint or run folder, or a loaded :class:`~reverie.agent.Dreamer`.
        record_dir: where recorded episodes go (see :mod:`reverie.studio.recorder`).
        context: frames (real or recorded) that seed each dream.
        real_env: build the checkpoint's env to seed dreams and to show beside them.
        seed: seed of the first dream of each connection (None: random).
        max_steps: dreamed steps before an episode is truncated.
        start: what seeds each dream: ``"env"`` or None (real frames, random actions), or a dataset folder
            (or :class:`~reverie.data.Dataset`) of the checkpoint's env, whose recorded steps and actions
            seed it (see :class:`~reverie.dream.DreamEnv`). Every reset of every connection keeps it.

    Raises:
        ValueError: the ``start`` dataset cannot be read or does not fit the checkpoint (one line).
    """

    def __init__(
        self,
        checkpoint: str | Path | Dreamer,
        record_dir: str | Path = "studio_recordings",
        context: int = 5,
        real_env: bool = True,
        seed: int | None = None,
        max_steps: int = 1000,
        start: str | Path | Dataset | None = None,
    ) -> None:
        from reverie.agent import Dreamer

        if context < 1:
            raise StudioError(f"The studio's context must be at least 1 frame, got {context}.")
        self.record_dir = Path(record_dir)
        _check_writable(self.record_dir)
        self.agent = checkpoint if isinstance(checkpoint, Dreamer) else Dreamer.load(checkpoint)
        dataset = None if start is None or (isinstance(start, str) and start == "env") else start
        self.dataset = dataset if dataset is None or isinstance(dataset, Dataset) else Dataset(dataset)
        """The dataset every dream starts from (shared by the connections; read-only), or None: the real env."""
        self.dream_args: dict[str, Any] = {
            "context": context,
            "real_env": real_env,
            "seed": seed,
            "max_steps": max_steps,
            "dataset": self.dataset,
        }
        if self.dataset is not None:  # a dataset of another env fails here, once, not in every connection
            DreamEnv(self.agent, context=context, real_env=False, dataset=self.dataset).close()
        self.pages = {name: _read_static(name) for name in STATIC}
        self.executor: ThreadPoolExecutor | None = None
        self.sockets: set[web.WebSocketResponse] = set()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.hosts: set[str] | None = set()
        """The ``Host`` headers accepted (None: any, when bound to a wildcard address); set by :meth:`start`."""

    # ----------------------------------------------------------------- app
    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._check_host])
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._websocket)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> str:
        """Start listening (``port=0`` picks a free one); returns the page's URL."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reverie-studio")
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()
        bound = self.runner.addresses[0][1]
        self.hosts = allowed_hosts(host, bound)
        if host not in LOOPBACK:
            log.warning("The studio listens on %s: other machines can reach it (only this one with 127.0.0.1)", host)
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/"
        log.info("Reverie studio on %s (Ctrl+C stops it)", self.url)
        return self.url

    async def stop(self) -> None:
        """Close connections (their sessions save open recordings), stop listening and the model thread."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8765,
        lifetime: float | None = None,
        stop: asyncio.Event | None = None,
        ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve until ``stop`` is set or ``lifetime`` seconds have passed (None: until cancelled)."""
        stop = stop or asyncio.Event()
        url = await self.start(host, port)
        if ready is not None:
            ready(url)
        try:
            await asyncio.wait_for(stop.wait(), lifetime)
        except TimeoutError:
            log.info("studio lifetime of %.0f s is over; stopping", lifetime)
        finally:
            await self.stop()

    def run(self, host: str = "127.0.0.1", port: int = 8765, lifetime: float | None = None) -> None:
        """Serve in the foreground until Ctrl+C or SIGTERM (or ``lifetime`` seconds); open takes are saved."""

        async def main() -> None:
            stop = asyncio.Event()
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / off the main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await self.serve(host, port, lifetime, stop)

        asyncio.run(main())

    # ----------------------------------------------------------------- handlers
    @web.middleware
    async def _check_host(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.hosts is not None and request.host.lower() not in self.hosts:
            raise web.HTTPForbidden(text=f"Host {request.host!r} refused: open the studio at {self.url}.")
        return await handler(request)

    async def _page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound(text=f"No static file {name!r}.")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        headers = {"Cache-Control": "no-store", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
        return web.Response(text=self.pages[name], content_type=STATIC[name], headers=headers)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc.lower() != request.host.lower():
            raise web.HTTPForbidden(text=f"WebSocket from origin {origin} refused; open the studio page itself.")
        ws = web.WebSocketResponse(max_msg_size=1 << 20, heartbeat=30.0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            session = await loop.run_in_executor(self.executor, self._new_session)
        except Exception as err:  # a real env that cannot be built: tell the page, keep serving others
            log.exception("studio session failed to start")
            await ws.send_str(_dumps({"type": "error", "message": f"Cannot start a dream: {err}"}))
            await ws.close()
            return ws
        self.sockets.add(ws)
        try:
            await ws.send_str(_dumps(session.info()))
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                for reply in await loop.run_in_executor(self.executor, _handle, session, msg.data):
                    await ws.send_str(_dumps(reply))
        except ConnectionResetError:  # the page went away while a reply was on its way
            log.info("studio client left mid-reply")
        finally:
            self.sockets.discard(ws)
            await loop.run_in_executor(self.executor, session.close)
        return ws

    def _new_session(self) -> Session:
        return Session(DreamEnv(self.agent, **self.dream_args), self.record_dir)

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"studio stopping")


def _handle(session: Session, data: str | bytes) -> list[dict[str, Any]]:
    """:meth:`Session.handle`, with any unexpected failure turned into an error reply."""
    try:
        return session.handle(data)
    except Exception as err:
        log.exception("studio message failed")
        return [{"type": "error", "message": f"Internal error ({type(err).__name__}: {err})"}]


def _dumps(message: dict[str, Any]) -> str:
    """JSON for the page; non-finite numbers (a diverged model) become null, which JSON.parse accepts."""
    try:
        return json.dumps(message, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(message), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _read_static(name: str) -> str:
    return resources.files("reverie.studio").joinpath("static").joinpath(name).read_text(encoding="utf-8")


@contextlib.contextmanager
def serve_in_thread(
    studio: Studio, host: str = "127.0.0.1", port: int = 0, lifetime: float | None = 300.0
) -> Iterator[str]:
    """Run ``studio`` on a background thread while the block runs; yields the page's URL.

    The server stops when the block exits, or by itself after ``lifetime`` seconds (a bound for tests
    and notebooks), whichever comes first.

    Example:
        >>> with serve_in_thread(Studio("runs/x"), lifetime=60) as url:  # doctest: +SKIP
        ...     print(url)
    """
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def ready_with(url: str) -> None:
        box["url"] = url
        ready.set()

    def main() -> None:
        try:
            loop.run_until_complete(studio.serve(host, port, lifetime, stop, ready_with))
        except BaseException as err:  # noqa: BLE001 (handed to the caller below)
            box["error"] = err
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=main, name="reverie-studio-server", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise box["error"]
    try:
        yield box["url"]
    finally:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: already stopped
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
