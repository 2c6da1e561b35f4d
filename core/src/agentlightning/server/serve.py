"""Run the store server: in a background thread of this process, or in the foreground (``agl store serve``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from agentlightning._background import guard_background_loop
from agentlightning.errors import StoreError
from agentlightning.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from agentlightning.store.base import LightningStore

__all__ = ["HttpServer", "StoreServer", "is_loopback"]

log = logging.getLogger("agentlightning.server")


def _run(coro: Any, *, background: bool = False) -> None:
    """Run the server's event loop: uvloop where installed (several times faster at HTTP), else asyncio; one run
    by a background thread is guarded against other code's finalizers (see ``agentlightning._background``)."""
    try:
        import uvloop

        new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        new_loop = asyncio.new_event_loop

    def loop_factory() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        if background:
            guard_background_loop(loop)
        return loop

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(coro)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpServer:
    """Serves an ASGI app with uvicorn: in a background thread (:meth:`start` / :meth:`stop`, or as a
    context manager) or in the foreground (:meth:`serve_forever`). ``port=0`` picks a free port;
    :attr:`url` tells which once started.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._app = app
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients connect to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise StoreError(f"Cannot listen on {self.host}:{self.port}: {exc.strerror}. Pick another --port.") from exc
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        return sock

    def _make_server(self) -> Any:
        import uvicorn

        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="auto",
            timeout_keep_alive=120,
            # Long waits (POST /rollouts/wait) must not hold a shutdown for minutes.
            timeout_graceful_shutdown=3,
            backlog=2048,
        )
        return uvicorn.Server(config)

    def start(self) -> HttpServer:
        """Start serving in a background thread; returns once the server accepts connections."""
        sock = self._bind()
        self._server = self._make_server()
        started = threading.Event()

        def run() -> None:
            async def main() -> None:
                serve = asyncio.ensure_future(self._server.serve(sockets=[sock]))
                while not self._server.started and not serve.done():  # noqa: ASYNC110 (uvicorn has no started event)
                    await asyncio.sleep(0.01)
                started.set()
                await serve

            try:
                _run(main(), background=True)
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name="agentlightning-store-server", daemon=True)
        self._thread.start()
        started.wait()
        if not self._server.started:
            raise StoreError(f"The server did not start on {self.url}; see the log above.")
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end (the store itself stays open)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                raise StoreError(f"The server at {self.url} did not stop within 30 s.")
        self._thread = None

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (Ctrl-C or SIGTERM)."""
        sock = self._bind()
        self._server = self._make_server()
        _run(self._server.serve(sockets=[sock]))

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class StoreServer(HttpServer):
    """Serves a store over HTTP (REST and OTLP). Binds to loopback unless given a token."""

    def __init__(
        self,
        store: LightningStore,
        *,
        host: str = "127.0.0.1",
        port: int = 4747,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not is_loopback(host) and not token:
            raise StoreError(
                f"Refusing to serve the store on {host!r} without a token: anyone who can reach it could read and "
                "change every run. Pass --token (or AGL_STORE_TOKEN), or bind to 127.0.0.1."
            )
        super().__init__(create_app(store, token=token, max_body_bytes=max_body_bytes), host=host, port=port)
        self.store = store
        self.token = token

    def start(self) -> StoreServer:
        """Start serving in a background thread; returns once the server accepts connections."""
        super().start()
        return self

    def __enter__(self) -> StoreServer:
        return self.start()
