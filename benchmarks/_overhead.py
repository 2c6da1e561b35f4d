"""What the integrations' overhead benchmarks share: the instant model served over HTTP in a process of its own
(``--http``), and how a case is printed: the run without the integration, with a do-nothing stand-in (the
framework's own cost of dispatching to one), and with the integration; what it adds, per LLM call and as a share of
the run."""

from __future__ import annotations

import contextlib
import socket
import statistics
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


def bench_tracer(store: Any, *, held: bool = False) -> Any:
    """The tracer a benchmark records with. By default a runner's own (``Tracer(store)``, as ``agl.Runner`` makes
    it): its writer thread writes the spans every 0.5 s while the agent runs, so the store's database work (which
    releases the GIL) can overlap the agent's where a second core is free, as in training. A benchmark flushes at
    the end of each timed round, so a round's time includes writing all it recorded either way. With ``held``,
    one that writes only when flushed, all at once at the end of the round (``--held-writes``: how these
    benchmarks measured before)."""
    from agentlightning.tracer import Tracer

    return Tracer(store, flush_interval=3600, batch_size=1 << 30) if held else Tracer(store)


HELD_WRITES_HELP = "write the spans only when a round ends (how these benchmarks measured before)"


def rotated(cases: Any, index: int) -> list[Any]:
    """The cases (a list, or a dict's items) in the order round ``index`` runs them: each round starts one case
    later, so no case always runs right after the same other one."""
    items = list(cases.items()) if isinstance(cases, dict) else list(cases)
    shift = index % len(items)
    return items[shift:] + items[:shift]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, q2, q3


def report(title: str, got: dict[str, list[float]], llm_calls: int, labels: tuple[str, str, str]) -> None:
    """Print ``got`` (µs per run, one value per interleaved round, for the cases ``none``, ``nothing`` and
    ``lightning``), labelled ``labels``. What the integration adds is the median over rounds of the difference
    within a round (rounds run back to back, so a slow spell of the machine hits all three cases of a round
    alike), with the quartiles of its share of the run: the spread to read the figure with."""
    print(title)
    for label, key in zip(labels, ("none", "nothing", "lightning"), strict=True):
        note = "   (the framework's dispatch to it)" if key == "nothing" else ""
        print(f"  {label:28s} {statistics.median(got[key]):8.1f} µs{note}")
    for what, base in (("it adds", "nothing"), ("all of it adds", "none")):
        pairs = list(zip(got["lightning"], got[base], strict=True))
        added = statistics.median(ours - other for ours, other in pairs)
        q1, median, q3 = _quartiles([(ours - other) / ours * 100 for ours, other in pairs])
        over = "over the do-nothing one" if base == "nothing" else "over none"
        print(
            f"  {what:28s} {added:8.1f} µs {over} "
            f"({added / llm_calls:.1f} µs per LLM call), {median:.1f} % of the run "
            f"(quartiles {q1:.1f}-{q3:.1f} % over {len(pairs)} rounds)"
        )
