"""What agentlightning-openai-agents' tracing processor adds to an agent run, in machine instructions: a figure free
of the timing noise of a shared virtual machine.

    python benchmarks/openai_agents_instructions.py [--runs 40]

Needs valgrind (``apt install valgrind``). The runs are ``openai_agents_overhead.py``'s: the SDK's chat-completions
model over an ``openai`` client whose transport answers at once in-process, inside an active rollout with a real
Tracer over an in-memory store; one agent answering at once (one LLM call, 5 spans) and the triage run (triage ->
handoff -> math with two parallel tool calls -> answer: 3 LLM calls); with no trace processor, a do-nothing one and
``LightningTracingProcessor``. The tracer writes when the runs end, so each process writes all it recorded. How a
case is counted: ``benchmarks/_instructions.py``. Takes about five minutes.
"""

from __future__ import annotations

import argparse
import asyncio

from _instructions import report, require_valgrind  # benchmarks/_instructions.py: the valgrind runs

CASES = {
    "none": "no trace processor",
    "nothing": "a do-nothing processor",
    "lightning": "LightningTracingProcessor",
}
RUNS = {"single": "One LLM call (one agent that answers at once)", "triage": "One triage run (3 LLM calls)"}


def child(case: str, runs: int, which: str) -> None:
    """The measured process: warm up, then ``runs`` runs of ``which`` with ``case``'s processors, spans written."""
    import httpx
    from agentlightning_openai_agents import LightningTracingProcessor, chat_completions_model
    from agents import Agent, Runner, set_trace_processors
    from openai import AsyncOpenAI
    from openai_agents_overhead import DoNothing, add, answer

    import agentlightning as agl
    from agentlightning.tracer import Tracer

    url = "http://instant/v1"
    transport = httpx.MockTransport(answer)
    client = AsyncOpenAI(api_key="unused", base_url=url, http_client=httpx.AsyncClient(transport=transport))
    model = chat_completions_model(agl.LLM(base_url=url, model="instant"), client=client)
    if which == "triage":
        math = Agent(name="math", instructions="You are math.", tools=[add], model=model)
        agent, question = (
            Agent(name="triage", instructions="You are triage.", handoffs=[math], model=model),
            "what is 2 plus 3",
        )
    else:
        agent, question = Agent(name="solver", instructions="You are a solver.", model=model), "hi"
    processors = {"none": [], "nothing": [DoNothing()], "lightning": [LightningTracingProcessor()]}[case]
    set_trace_processors(processors)  # type: ignore[arg-type]

    async def main() -> None:
        store = agl.InMemoryStore()
        tracer = Tracer(store, flush_interval=3600, batch_size=1 << 30)  # writes at the flushes only
        rollout = await store.start_rollout(agl.RolloutRequest(input="bench"))
        async with tracer.trace(rollout.rollout_id, rollout.attempt.attempt_id):
            for _ in range(3):  # warm-up: first calls fill caches, in every process alike
                await Runner.run(agent, question)
            await tracer.flush()
            for _ in range(runs):
                await Runner.run(agent, question)
            await tracer.flush()
        tracer.close()
        await store.close()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="agent runs per measured process (default: %(default)s)")
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--which", choices=list(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.runs, args.which)
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    require_valgrind()
    for which, title in RUNS.items():
        report(title, __file__, CASES, args.runs, ["--which", which])


if __name__ == "__main__":
    main()
