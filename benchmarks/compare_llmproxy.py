"""Our gateway next to agentlightning 0.3.0's LiteLLM-based LLMProxy, both recording spans, in one run.

    python benchmarks/compare_llmproxy.py [--calls 2000] [--concurrency 16] [--seconds 10]

Same fast local upstream, same request body, same number of sequential calls and the same N-client
concurrency window for both, as in benchmarks/gateway_overhead.py (whose upstream, request and helpers
this script reuses). For each proxy: start-up seconds (from spawning its process to its first proxied
chat completion answered 200), added p50 / p99 latency against direct upstream calls measured just
before it, requests/s with N concurrent clients, and the spans found in its store afterwards.

Ours: ``agl gateway`` in front of the upstream, recording into a SQLite store, calls attributed to one
rollout through ``/rollouts/{rid}/attempts/{aid}/v1``.

Theirs: agentlightning 0.3.0 from PyPI, in its own venv (``benchmarks/.venv-agl030``, created here if
missing). A launcher run by that venv's python starts, as 0.3.0's trainer does, a ``LightningStoreServer``
over an ``InMemoryLightningStore`` and an ``LLMProxy`` in its default ``mp`` launch mode with its default
middlewares (rollout_attempt, stream_conversion) and callbacks (return_token_ids, opentelemetry: LiteLLM's
OTel spans exported by ``LightningSpanExporter`` over OTLP to the store server's ``/v1/traces``), calls
attributed through ``/rollout/{rid}/attempt/{aid}/v1``.

0.3.0's dependencies are installed as they stood on its release (pip ``--uploaded-prior-to``, default
2025-12-25): with today's releases its span export records nothing (opentelemetry-exporter-otlp-proto-http
>= 1.40 ignores the endpoint 0.3.0 patches into the exporter, so every call retries ~6 s against
localhost:4318) and LiteLLM >= 1.8x refuses to start without a master key. Pass ``--deps-before none``
to install the newest instead.

Nothing here talks to anything but 127.0.0.1, except pip while creating the venv (PyPI only);
LiteLLM's remote lookups are switched to its bundled copies (LITELLM_LOCAL_MODEL_COST_MAP=True etc.).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

import agentlightning as agl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import REQUEST, UPSTREAM, free_port, pct, sequential, wait_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / "benchmarks" / ".venv-agl030"
AGL030 = "agentlightning==0.3.0"

# No phoning home: LiteLLM fetches its cost map and a few other files from GitHub unless told to use its own copies.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    # Only for newer LiteLLM (--deps-before none): 0.3.0 sets no master key, and those refuse to start without one.
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}

# Run by the 0.3.0 venv's python: argv = upstream base URL, proxy port, store port.
# Prints one "AGL030 {json}" line when ready, then answers "count" lines on stdin; anything else stops it.
LAUNCHER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    t0 = time.perf_counter()
    upstream, proxy_port, store_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    from importlib.metadata import version
    from agentlightning.llm_proxy import LLMProxy
    from agentlightning.store import InMemoryLightningStore, LightningStoreServer
    t_import = time.perf_counter()

    def emit(obj):
        sys.stdout.write("AGL030 " + json.dumps(obj) + "\\n")
        sys.stdout.flush()

    async def main():
        # As `agl store` and 0.3.0's client-server trainer do: an in-memory store behind its HTTP/OTLP server.
        server = LightningStoreServer(InMemoryLightningStore(thread_safe=True), host="127.0.0.1", port=store_port,
                                      launch_mode="thread")
        await server.start()
        t_store = time.perf_counter()
        rollout = await server.start_rollout(input="bench")
        # As 0.3.0's verl daemon does (hosted_vllm/ model, default mp launch mode, middlewares and callbacks).
        proxy = LLMProxy(port=proxy_port, host="127.0.0.1", store=server, launch_mode="mp",
                         model_list=[{"model_name": "bench",
                                      "litellm_params": {"model": "hosted_vllm/bench", "api_base": upstream}}])
        await proxy.start()
        t_proxy = time.perf_counter()
        emit({"event": "ready", "rollout_id": rollout.rollout_id, "attempt_id": rollout.attempt.attempt_id,
              "import_s": t_import - t0, "store_s": t_store - t_import, "proxy_s": t_proxy - t_store,
              "callbacks": [c.__name__ for c in proxy.callbacks], "middlewares": [m.__name__ for m in proxy.middlewares],
              "versions": {p: version(p) for p in ("agentlightning", "litellm", "opentelemetry-sdk",
                                                   "opentelemetry-exporter-otlp-proto-http", "fastapi", "uvicorn")}})
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line != "count":
                break
            spans = await server.query_spans(rollout.rollout_id)
            emit({"event": "count", "spans": len(spans), "calls": len({s.sequence_id for s in spans}),
                  "names": sorted({s.name for s in spans})})
        await proxy.stop()
        await server.stop()

    asyncio.run(main())
    """
)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def agl030_installed(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    probe = "from importlib.metadata import version; import agentlightning.llm_proxy; print(version('agentlightning'))"
    result = subprocess.run(
        [str(python), "-c", probe], env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True
    )
    return result.returncode == 0 and result.stdout.strip().endswith("0.3.0")


def ensure_venv(venv: Path, deps_before: str | None) -> None:
    """Create ``venv`` with agentlightning 0.3.0 from PyPI unless it is there already."""
    if agl030_installed(venv):
        return
    print(f"creating {venv} with {AGL030} (dependencies uploaded before {deps_before or 'now'}) ...", flush=True)
    if not venv_python(venv).exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet"]
    # --uploaded-prior-to needs pip >= 25.x; torch is never a dependency of 0.3.0, but constrain it to the
    # local CPU build in case anything pulls it.
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    constraint = ["-c", str(ROOT / "constraints.txt")]
    dated = ["--uploaded-prior-to", deps_before] if deps_before else []
    subprocess.run([*pip, *constraint, *dated, AGL030], check=True)
    torch = subprocess.run(
        [str(venv_python(venv)), "-c", "import importlib.util; print(importlib.util.find_spec('torch') is not None)"],
        capture_output=True,
        text=True,
    )
    if torch.stdout.strip() != "False":
        print("note: torch got installed into the 0.3.0 venv", flush=True)
    if not agl030_installed(venv):
        raise SystemExit(f"{AGL030} did not install into {venv}")


async def first_call(url: str, deadline_s: float = 120.0) -> None:
    """Wait until ``url`` answers the benchmark request with 200."""
    stop = time.perf_counter() + deadline_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(url, json=REQUEST) as response:
                    await response.read()
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.perf_counter() > stop:
                raise RuntimeError(f"{url} did not answer 200 within {deadline_s:.0f} s")
            await asyncio.sleep(0.05)


async def concurrent(session: aiohttp.ClientSession, url: str, clients: int, seconds: float) -> tuple[float, int, int]:
    """(requests/s, calls answered 200, other answers) with ``clients`` clients for ``seconds``."""
    ok = failed = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal ok, failed
        while time.perf_counter() < stop:
            async with session.post(url, json=REQUEST) as response:
                await response.read()
                if response.status == 200:
                    ok += 1
                else:
                    failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return ok / (time.perf_counter() - start), ok, failed


async def measure(upstream: str, proxy: str, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential direct and proxied calls, then N concurrent clients through the proxy."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await sequential(session, upstream, args.warmup)
        await sequential(session, proxy, args.warmup)
        direct = await sequential(session, upstream, args.calls)
        through = await sequential(session, proxy, args.calls)
        rps, ok, failed = await concurrent(session, proxy, args.concurrency, args.seconds)
    return {
        "direct_p50": pct(direct, 50),
        "direct_p99": pct(direct, 99),
        "p50": pct(through, 50),
        "p99": pct(through, 99),
        "added_p50": pct(through, 50) - pct(direct, 50),
        "added_p99": pct(through, 99) - pct(direct, 99),
        "rps": rps,
        "calls": 1 + args.warmup + args.calls + ok,  # 1: the start-up probe
        "failed": failed,
    }


def run_ours(upstream_base: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    db = tmp / "gateway.db"
    port = free_port()

    async def prepare() -> agl.AttemptedRollout:
        store = agl.SqliteStore(db)
        try:
            return await store.start_rollout(agl.RolloutRequest(input="bench"))
        finally:
            await store.close()

    rollout = asyncio.run(prepare())
    url = f"http://127.0.0.1:{port}/rollouts/{rollout.rollout_id}/attempts/{rollout.attempt.attempt_id}/v1/chat/completions"
    command = [sys.executable, "-m", "agentlightning.cli", "gateway", "--upstream", upstream_base]
    command += ["--store", f"sqlite:///{db}", "--port", str(port)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL)
    try:
        asyncio.run(first_call(url))
        startup = time.perf_counter() - start
        result = asyncio.run(measure(f"{upstream_base}/chat/completions", url, args))
    finally:
        proc.terminate()
        proc.wait()

    async def count() -> list[agl.Span]:
        store = agl.SqliteStore(db, read_only=True)
        try:
            return await store.query_spans(rollout.rollout_id)
        finally:
            await store.close()

    spans = asyncio.run(count())
    return {
        **result,
        "startup": startup,
        "spans": len(spans),
        "recorded_calls": len({s.trace_id for s in spans}),
        "span_names": sorted({s.name for s in spans}),
    }


def run_theirs(upstream_base: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    proxy_port, store_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OFFLINE_ENV, PYTHONUNBUFFERED="1")
    log_path = tmp / "agl030.log"
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(venv_python(args.venv)), "-c", LAUNCHER, upstream_base, str(proxy_port), str(store_port)],
            env=env,
            cwd=tmp,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,  # its LLMProxy forks a child; stop the whole group if it does not stop itself
        )
        assert proc.stdin is not None and proc.stdout is not None

        def read_event() -> dict[str, Any]:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("AGL030 "):
                    return json.loads(line[len("AGL030 ") :])
                log.write(line)
            raise RuntimeError(f"0.3.0 launcher exited ({proc.wait()}); see its log:\n{log_path.read_text()[-4000:]}")

        try:
            ready = read_event()
            url = f"http://127.0.0.1:{proxy_port}/rollout/{ready['rollout_id']}/attempt/{ready['attempt_id']}/v1/chat/completions"
            asyncio.run(first_call(url))
            startup = time.perf_counter() - start
            result = asyncio.run(measure(f"{upstream_base}/chat/completions", url, args))
            # Spans may reach the store after the response: count until the count stops changing.
            counted: dict[str, Any] = {}
            unchanged = 0
            for _ in range(60):
                proc.stdin.write("count\n")
                proc.stdin.flush()
                latest = read_event()
                unchanged = unchanged + 1 if latest == counted else 0
                counted = latest
                if counted["calls"] >= result["calls"] or unchanged >= 3:
                    break
                time.sleep(1.0)
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    return {
        **result,
        "startup": startup,
        "spans": counted["spans"],
        "recorded_calls": counted["calls"],
        "span_names": counted["names"],
        "ready": ready,
        "log": log_path.read_text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per proxy (and direct)")
    parser.add_argument("--warmup", type=int, default=200, help="sequential warm-up calls, direct and per proxy")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the concurrency window")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="venv for agentlightning 0.3.0")
    parser.add_argument(
        "--deps-before",
        default="2025-12-25T00:00:00Z",
        help="install 0.3.0's dependencies as uploaded before this (pip --uploaded-prior-to); 'none': newest",
    )
    args = parser.parse_args()
    ensure_venv(args.venv, None if args.deps_before.lower() == "none" else args.deps_before)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        up_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-c", UPSTREAM, str(up_port)], env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:
            wait_port(up_port)
            base = f"http://127.0.0.1:{up_port}/v1"
            ours = run_ours(base, tmp, args)
            theirs = run_theirs(base, tmp, args)
        finally:
            upstream.terminate()
            upstream.wait()

    problems = [
        f"{name} recorded spans for {r['recorded_calls']} of {r['calls']} calls"
        for name, r in (("ours", ours), ("0.3.0 LLMProxy", theirs))
        if r["recorded_calls"] < r["calls"]
    ]
    if problems:
        print("WARNING: NOT A FAIR COMPARISON (a proxy did not record every call): " + "; ".join(problems))
    ready = theirs["ready"]
    print(f"agentlightning 0.3.0 venv: {', '.join(f'{k} {v}' for k, v in ready['versions'].items())}")
    print(
        f"  LLMProxy launch_mode=mp, middlewares {ready['middlewares']}, callbacks {ready['callbacks']}; "
        f"store: LightningStoreServer(InMemoryLightningStore), spans exported over OTLP"
    )
    print(
        f"  its start-up: import {ready['import_s']:.2f} s, store server {ready['store_s']:.2f} s, "
        f"LLMProxy.start() {ready['proxy_s']:.2f} s"
    )
    print(
        f"{args.calls} sequential calls (after {args.warmup} warm-up), {args.concurrency} concurrent clients "
        f"for {args.seconds:g} s, same upstream and request body"
    )
    print()
    header = f"{'':30s}{'ours (agl gateway)':>20s}{'0.3.0 LLMProxy':>18s}{'theirs/ours':>13s}"
    print(header)
    print("-" * len(header))
    rows = [
        ("direct upstream p50 (ms)", "direct_p50", "{:.2f}", False),
        ("direct upstream p99 (ms)", "direct_p99", "{:.2f}", False),
        ("through proxy p50 (ms)", "p50", "{:.2f}", False),
        ("through proxy p99 (ms)", "p99", "{:.2f}", False),
        ("added p50 (ms)", "added_p50", "{:.2f}", True),
        ("added p99 (ms)", "added_p99", "{:.2f}", True),
        (f"requests/s, {args.concurrency} clients", "rps", "{:.1f}", True),
        ("start-up (s)", "startup", "{:.2f}", True),
    ]
    for label, key, fmt, ratio in rows:
        line = f"{label:30s}{fmt.format(ours[key]):>20s}{fmt.format(theirs[key]):>18s}"
        if ratio:
            line += f"{theirs[key] / ours[key]:>12.2f}x" if ours[key] > 0 else f"{'n/a':>13s}"
        print(line)
    for label, key in [
        ("calls made through proxy", "calls"),
        ("non-200 answers", "failed"),
        ("spans in its store", "spans"),
        ("calls with spans", "recorded_calls"),
    ]:
        print(f"{label:30s}{ours[key]:>20d}{theirs[key]:>18d}")
    print(f"{'spans per call':30s}{ours['spans'] / ours['calls']:>20.2f}{theirs['spans'] / theirs['calls']:>18.2f}")
    print(f"span names, ours  : {', '.join(ours['span_names'])}")
    print(f"span names, theirs: {', '.join(theirs['span_names'])}")
    print("(requests/s theirs/ours < 1 and added-latency ratios > 1 mean ours is faster)")

    if problems:
        print()
        print("WARNING: NOT A FAIR COMPARISON: " + "; ".join(problems))
        errors = [line for line in theirs["log"].splitlines() if "rror" in line or "ailed" in line][:10]
        if errors:
            print("0.3.0 log excerpts:\n  " + "\n  ".join(errors))


if __name__ == "__main__":
    main()
