"""The project's background event loops (the tracer's writer, servers run in a thread) never run clean-up that
another library's finalizer schedules on "the running loop" when a garbage collection happens in their thread:
that clean-up belongs to the agent's loop, and run elsewhere it closes the agent's sockets from the wrong thread
(what an unclosed ``openai.AsyncOpenAI`` client does when it is collected)."""

from __future__ import annotations

import asyncio
import gc
import threading
import urllib.request
from typing import Any

import agentlightning as agl
from agentlightning.server.serve import HttpServer
from agentlightning.tracer import Tracer


class LeakedClient:
    """Like openai's async HTTP client left unclosed: in a reference cycle, and its ``__del__`` schedules its
    clean-up on whatever loop is running in the thread that collects it."""

    def __init__(self, cleaned_up_in: list[str]) -> None:
        self.cleaned_up_in = cleaned_up_in
        self.cycle = self

    def __del__(self) -> None:
        cleaned_up_in = self.cleaned_up_in

        async def aclose() -> None:
            cleaned_up_in.append(threading.current_thread().name)

        try:
            asyncio.get_running_loop().create_task(aclose())
        except Exception:
            pass


def leak(cleaned_up_in: list[str]) -> None:
    LeakedClient(cleaned_up_in)  # unreachable at once, freed only by a garbage collection


class CollectingStore(agl.InMemoryStore):
    """Collects garbage in the middle of the tracer's write, as the writer's own allocations do now and then."""

    async def add_encoded_spans(self, spans: Any) -> Any:
        gc.collect()
        return await super().add_encoded_spans(spans)


async def test_a_collection_in_the_tracer_thread_runs_no_finalizer_work_on_its_loop() -> None:
    store = CollectingStore()
    tracer = Tracer(store)
    cleaned_up_in: list[str] = []
    gc.disable()  # the collection must happen in the writer thread, not here
    try:
        rollout = await store.start_rollout(agl.RolloutRequest(input="task"))
        async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
            leak(cleaned_up_in)
            agl.emit_reward(1.0)
        await tracer.flush()
        await asyncio.sleep(0.05)  # a task the writer's loop had taken would have run by now
    finally:
        gc.enable()
        tracer.close()
    assert cleaned_up_in == []
    assert tracer.spans_written == 2  # the writer went on writing: the root span and the reward
    await store.close()


def test_a_collection_in_a_server_thread_runs_no_finalizer_work_on_its_loop() -> None:
    cleaned_up_in: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        leak(cleaned_up_in)
        gc.collect()  # in the server's thread, with its loop running
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with HttpServer(app, port=0) as server, urllib.request.urlopen(server.url + "/") as reply:
        assert reply.read() == b"ok"
    assert cleaned_up_in == []


def test_tasks_the_loops_own_code_creates_still_run() -> None:
    ran: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

        async def work() -> None:
            ran.append(threading.current_thread().name)

        await asyncio.get_running_loop().create_task(work())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with HttpServer(app, port=0) as server:
        urllib.request.urlopen(server.url + "/").close()
    assert ran == ["agentlightning-store-server"]
