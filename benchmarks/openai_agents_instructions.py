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

from _instructions import main, run_recorded  # benchmarks/_instructions.py: the valgrind runs

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

    run_recorded(lambda: Runner.run(agent, question), runs)


if __name__ == "__main__":
    main(__doc__, __file__, CASES, RUNS, child)
