"""What agentlightning-langchain's callback handler adds to an agent run, in machine instructions: a figure free of
the timing noise of a shared virtual machine.

    python benchmarks/langchain_instructions.py [--runs 40]

Needs valgrind (``apt install valgrind``). The run is ``langchain_overhead.py``'s: a ``create_agent`` agent (2 LLM
calls, 2 parallel tool calls, 9 spans), inside an active rollout with a real Tracer over an in-memory store, with no
handler, a do-nothing handler and ``LightningCallbackHandler``, over two zero-latency scripted models:

- ``InstantModel``: a LangChain chat model that returns its canned message itself (no client at all);
- ``ChatOpenAI`` (what an agent trained through the gateway calls) over an ``openai`` client whose HTTP transport
  answers the same at once, in-process (``httpx.MockTransport``), as ``openai_agents_instructions.py`` does: the
  request is built and its answer parsed, and the handler's request header (``x-agentlightning-caller``) is counted.

A third case is one LLM call (``InstantModel``, one tool offered) on an 80-message conversation, made again and
again with the same messages, as an agent's later calls repeat its earlier ones: what recording a long
conversation's call costs.

The tracer writes when the runs end, so each process writes all it recorded. How a case is counted, and how far to
trust it: ``benchmarks/_instructions.py``. Takes about two minutes per 40 runs.
"""

from __future__ import annotations

import os

from _instructions import main, run_recorded  # benchmarks/_instructions.py: the valgrind runs

LONG = 80  # messages in the long conversation
CASES = {"none": "no handler", "nothing": "a do-nothing handler", "lightning": "LightningCallbackHandler"}
RUNS = {
    "agent": "One agent run (create_agent over InstantModel: 2 LLM calls, 2 parallel tool calls, 9 spans)",
    "chat_openai": "One agent run (create_agent over ChatOpenAI, an instant in-process transport: the same run)",
    "long": f"One LLM call of a {LONG}-message conversation (InstantModel.invoke, 1 tool offered)",
}


def child(case: str, runs: int, which: str) -> None:
    """The measured process: warm up, then ``runs`` agent runs of ``case`` over ``which`` model (or, for
    ``long``, ``runs`` calls of one model on the same long conversation, as an agent's later calls repeat its
    earlier messages), spans written."""
    os.environ["LANGCHAIN_TRACING_V2"] = os.environ["LANGSMITH_TRACING"] = "false"
    from agentlightning_langchain import LightningCallbackHandler
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage
    from langchain_overhead import DoNothing, InstantModel, conversation, instant_chat_openai, lookup

    config: dict[str, object] = {"metadata": {"agent_name": "bench"}}
    if case != "none":
        config["callbacks"] = [DoNothing() if case == "nothing" else LightningCallbackHandler()]
    if which == "long":
        chat = InstantModel().bind_tools([lookup])
        messages = conversation(LONG)
        run_recorded(lambda: chat.invoke(messages, config), runs)
        return
    model = instant_chat_openai() if which == "chat_openai" else InstantModel()
    agent = create_agent(model, tools=[lookup], name="bench")
    inputs = {"messages": [HumanMessage("What are the values of a and b?")]}

    run_recorded(lambda: agent.invoke(inputs, config), runs)


if __name__ == "__main__":
    main(__doc__, __file__, CASES, RUNS, child)
