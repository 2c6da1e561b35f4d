"""What the integrations' overhead benchmarks share: the instant model served over HTTP in a process of its own
(``--http``), and how a case is printed: the run without the integration, with a do-nothing stand-in (the
framework's own cost of dispatching to one), and with the integration; what it adds, per LLM call and as a share of
the run."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any


def serve_instant_model(answer: Callable[[dict[str, Any]], dict[str, Any]], port: int) -> None:
    """Serve ``answer`` (chat-completions request body -> response body) on 127.0.0.1:``port`` until killed."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def completions(request: Request) -> JSONResponse:
        return JSONResponse(answer(await request.json()))

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def instant_model_server(script: str) -> Iterator[str]:
    """Run ``python script --serve PORT`` (which calls :func:`serve_instant_model`) in a child process, so that
    serving costs the measured process nothing; its OpenAI base URL until the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen([sys.executable, script, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("the instant model's server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        child.terminate()
        child.wait()


def report(title: str, got: dict[str, float], llm_calls: int, labels: tuple[str, str, str]) -> None:
    """Print ``got`` (µs per run for the cases ``none``, ``nothing`` and ``lightning``), labelled ``labels``."""
    none, nothing, ours = got["none"], got["nothing"], got["lightning"]
    print(title)
    print(f"  {labels[0]:28s} {none:8.1f} µs")
    print(f"  {labels[1]:28s} {nothing:8.1f} µs   (the framework's dispatch to it)")
    print(f"  {labels[2]:28s} {ours:8.1f} µs")
    print(
        f"  {'it adds':28s} {ours - nothing:8.1f} µs over the do-nothing one "
        f"({(ours - nothing) / llm_calls:.1f} µs per LLM call), {(ours - nothing) / ours * 100:.1f} % of the run"
    )
    print(
        f"  {'all of it adds':28s} {ours - none:8.1f} µs over none "
        f"({(ours - none) / llm_calls:.1f} µs per LLM call), {(ours - none) / ours * 100:.1f} % of the run"
    )
