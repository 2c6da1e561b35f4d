"""Quick-start: a store server, a queue of tasks, workers that run them, and the runs they leave behind.

    python examples/quickstart/quickstart.py                 # writes quickstart.db in the current folder
    agl runs list --store sqlite:///quickstart.db            # look again later

What happens:
1. A SQLite store is served over HTTP on 127.0.0.1 (as `agl store serve` would).
2. The "trainer" side publishes a prompt template and enqueues a small arithmetic dataset, 4 rollouts per
   task with one group id each (the shape GRPO training uses).
3. Four workers talk to the server only through `agl.StoreClient`: they dequeue a rollout, send
   heartbeats, record what their (toy, LLM-free) agent does as spans — an agent span, a tool span and
   a reward — and finish the attempt. One worker crashes on its first rollout: the store notices the
   silence, marks the attempt unresponsive, and the rollout is retried by another worker.
4. The trainer waits for every rollout (woken by the store, not by polling) and prints the runs.

The next step of the project replaces the toy agent with a real one and the spans with traces.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import time
from pathlib import Path

import agentlightning as agl
from agentlightning import semconv
from agentlightning.cli import main as agl_cli

TASKS = [{"question": f"{a} + {b}", "answer": a + b} for a, b in [(2, 3), (7, 5), (12, 30), (9, 9), (40, 2), (13, 8)]]
GROUP_SIZE = 4


def span(
    rollout: agl.AttemptedRollout, trace_id: str, name: str, parent: str | None, **attributes: agl.AttributeValue
) -> agl.Span:
    now = time.time()
    return agl.Span(
        rollout_id=rollout.rollout_id,
        attempt_id=rollout.attempt.attempt_id,
        trace_id=trace_id,
        span_id=secrets.token_hex(8),
        parent_id=parent,
        name=name,
        start_time=now,
        end_time=now + random.uniform(0.001, 0.02),
        attributes=attributes,
    )


async def run_agent(store: agl.LightningStore, rollout: agl.AttemptedRollout, prompt: agl.PromptTemplate) -> None:
    """A toy agent: 'reads' the prompt, calls a calculator tool, sometimes slips, and scores itself."""
    task = rollout.input
    assert isinstance(task, dict)
    trace_id = secrets.token_hex(16)
    agent = span(rollout, trace_id, "invoke_agent solver", None, **{semconv.GEN_AI_AGENT_NAME: "solver"})
    question = prompt.format(question=task["question"])
    a, b = (int(x) for x in str(task["question"]).split(" + "))
    guess = a + b if random.random() < 0.7 else a + b + random.choice([-1, 1])
    tool = span(
        rollout,
        trace_id,
        "execute_tool calculator",
        agent.span_id,
        **{
            semconv.GEN_AI_TOOL_NAME: "calculator",
            semconv.GEN_AI_TOOL_CALL_ARGUMENTS: question,
            semconv.GEN_AI_TOOL_CALL_RESULT: str(guess),
        },
    )
    reward = 1.0 if guess == task["answer"] else 0.0
    scored = span(
        rollout,
        trace_id,
        semconv.SPAN_REWARD,
        agent.span_id,
        **{semconv.AGL_REWARD_VALUE: reward, semconv.AGL_REWARD_NAME: "exact_match"},
    )
    await store.add_many_spans([agent, tool, scored])


async def worker(url: str, name: str, crash_first: bool) -> int:
    """Dequeue and run rollouts until the queue stays empty; returns how many this worker finished."""
    store = agl.StoreClient(url)
    done = 0
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < 3.0:
            rollout = await store.dequeue_rollout(worker_id=name)
            if rollout is None:
                await asyncio.sleep(0.05)
                continue
            idle_since = time.monotonic()
            resources = await store.get_resources_by_id(rollout.resources_id or "")
            if crash_first:
                print(f"  {name}: took {rollout.rollout_id} and went silent (simulated crash)")
                crash_first = False
                continue  # no heartbeat, no spans, no finish: the store will time the attempt out
            await store.heartbeat(rollout.rollout_id, rollout.attempt.attempt_id)
            await run_agent(store, rollout, resources.get("prompt", agl.PromptTemplate))
            await store.update_attempt(
                rollout.rollout_id, rollout.attempt.attempt_id, status=agl.AttemptStatus.SUCCEEDED
            )
            done += 1
    finally:
        await store.close()
    return done


async def trainer(url: str) -> list[agl.Rollout]:
    store = agl.StoreClient(url)
    try:
        resources = await store.add_resources(
            {"prompt": agl.PromptTemplate(template="Compute {question}. Answer with a number.")}
        )
        config = agl.RolloutConfig(unresponsive_seconds=1.0, max_attempts=2)
        requests = [
            agl.RolloutRequest(
                input=task,
                mode=agl.RolloutMode.TRAIN,
                resources_id=resources.resources_id,
                config=config,
                metadata={"group_id": f"task-{i}"},
            )
            for i, task in enumerate(TASKS)
            for _ in range(GROUP_SIZE)
        ]
        rollouts = await store.enqueue_many_rollouts(requests)
        print(
            f"Enqueued {len(rollouts)} rollouts ({len(TASKS)} tasks x {GROUP_SIZE}) using resources {resources.resources_id}"
        )
        workers = [asyncio.create_task(worker(url, f"worker-{i}", crash_first=i == 0)) for i in range(4)]
        finished = await store.wait_for_rollouts([r.rollout_id for r in rollouts], timeout=60)
        counts = await asyncio.gather(*workers)
        print(f"All {len(finished)} rollouts finished; rollouts per worker: {counts}")
        stats = await store.statistics()
        print(
            f"Store holds {stats.spans} spans; attempts by status: { {k.value: v for k, v in stats.attempts.items() if v} }"
        )
        return finished
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Agent Lightning store quick-start")
    parser.add_argument("--db", default="quickstart.db", help="SQLite file to write (default: %(default)s)")
    args = parser.parse_args()
    random.seed(0)
    db = Path(args.db).resolve()
    store = agl.SqliteStore(db)
    with agl.StoreServer(store, port=0) as server:
        print(f"Store server for {db} at {server.url}")
        finished = asyncio.run(trainer(server.url))
        retried = [r for r in finished if r.num_attempts > 1]
        agl_cli(["runs", "list", "--store", server.url, "--limit", "10"])
        if retried:
            print(f"\nRollout {retried[0].rollout_id} was retried after its first worker went silent:")
            agl_cli(["runs", "show", retried[0].rollout_id, "--store", server.url])
    asyncio.run(store.close())
    print(f"\nRuns are kept in {db}. Look again with: agl runs list --store sqlite:///{db}")


if __name__ == "__main__":
    main()
