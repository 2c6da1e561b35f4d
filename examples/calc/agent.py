"""The calc agent: a LangGraph graph that answers an arithmetic question with two LLM calls.

    START -> solver -> answer -> END

- ``solver`` works the problem out step by step (free text, up to ``SOLVER_MAX_TOKENS``);
- ``answer`` reads the question and that working, and states the final number (``ANSWER_MAX_TOKENS``).

Each node is an agent of its own name, so a trainer can select either
(``agl.TraceToTrajectory(agents=["solver"])``). The graph runs with ``agentlightning_langchain``'s
``LightningCallbackHandler`` (passed in one place, :func:`callbacks`), which records the graph, its nodes and
their LLM calls as spans named after the nodes; the gateway's span of each call (with the token ids) becomes
the child of the handler's. Each node's ``ChatOpenAI`` also talks to ``llm.for_agent(<node>)``, so the gateway's
span names the agent itself, and the names hold without the handler too.

The reward is 1.0 when the last number in the ``answer`` node's text equals the task's answer
(:func:`final_number` is lenient about how it is written), else 0.0; the agent returns it, and the runner
records it as the rollout's final reward.

Why two nodes and no calculator tool: SmolLM2-135M-Instruct's chat template ignores ``tools``, so it
never calls one; two plain calls work with any chat model.
"""

from __future__ import annotations

import asyncio
import math
import re
import weakref
from typing import Any, TypedDict

import openai
from agentlightning_langchain import LightningCallbackHandler
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph

import agentlightning as agl

__all__ = ["calc_agent", "build_graph", "final_number", "reward", "SOLVER", "ANSWER"]

SOLVER, ANSWER = "solver", "answer"
SOLVER_PROMPT = "You are a careful math assistant. Work the problem out step by step, briefly."
ANSWER_PROMPT = "Question: {question}\nWorking: {work}\n\nWhat is the final answer? Reply with the number only."
# Long enough for SmolLM2's usual few-sentence working; the answer is one short sentence at most.
SOLVER_MAX_TOKENS = 128
ANSWER_MAX_TOKENS = 16


class CalcState(TypedDict, total=False):
    """What flows through the graph."""

    question: str
    work: str
    answer: str


_SYNC_HTTP_CLIENT: Any = None
_ASYNC_HTTP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _http_clients() -> tuple[Any, Any]:
    """One HTTP client (sync) and one per event loop (async) for every model of every rollout. Left to itself,
    ``ChatOpenAI`` caches its clients by base URL, and each rollout's gateway URL is its own: it would build two new
    clients, each loading the TLS certificates, for every node of every rollout (~10 ms of CPU each time)."""
    global _SYNC_HTTP_CLIENT
    if _SYNC_HTTP_CLIENT is None:
        _SYNC_HTTP_CLIENT = openai.DefaultHttpxClient()
    loop = asyncio.get_running_loop()
    client = _ASYNC_HTTP_CLIENTS.get(loop)
    if client is None:
        client = _ASYNC_HTTP_CLIENTS[loop] = openai.DefaultAsyncHttpxClient()
    return _SYNC_HTTP_CLIENT, client


def chat_model(llm: agl.LLM, agent: str, max_tokens: int) -> ChatOpenAI:
    """A chat model on ``llm`` whose calls the gateway attributes to ``agent``, sampling as the resource says
    (``temperature``, ``top_p``; its ``max_tokens``, if any, caps the node's own ``max_tokens``)."""
    sampling = llm.sampling_parameters
    temperature, top_p, cap = sampling.get("temperature"), sampling.get("top_p"), sampling.get("max_tokens")
    http_client, http_async_client = _http_clients()
    return ChatOpenAI(
        base_url=llm.for_agent(agent).base_url,
        model=llm.model,
        api_key=llm.api_key or "unused",  # type: ignore[arg-type]  # the gateway needs none
        # an alias of max_completion_tokens, which the type stubs do not know
        max_tokens=min(max_tokens, cap) if isinstance(cap, int) else max_tokens,  # type: ignore[call-arg]
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        top_p=float(top_p) if isinstance(top_p, int | float) else None,
        max_retries=0,  # a failed call fails the rollout, as it should in training
        http_client=http_client,
        http_async_client=http_async_client,
    )


def build_graph(llm: agl.LLM) -> Any:
    """The compiled graph for one rollout (its models talk to that rollout's gateway URL)."""
    solver_model = chat_model(llm, SOLVER, SOLVER_MAX_TOKENS)
    answer_model = chat_model(llm, ANSWER, ANSWER_MAX_TOKENS)

    async def solver(state: CalcState) -> CalcState:
        reply = await solver_model.ainvoke([SystemMessage(SOLVER_PROMPT), HumanMessage(state["question"])])
        return {"work": str(reply.text)}

    async def answer(state: CalcState) -> CalcState:
        prompt = ANSWER_PROMPT.format(question=state["question"], work=state["work"].strip())
        reply = await answer_model.ainvoke([HumanMessage(prompt)])
        return {"answer": str(reply.text)}

    graph = StateGraph(CalcState)
    graph.add_node(SOLVER, solver)
    graph.add_node(ANSWER, answer)
    graph.add_edge(START, SOLVER)
    graph.add_edge(SOLVER, ANSWER)
    graph.add_edge(ANSWER, END)
    return graph.compile(name="calc")


def callbacks() -> list[BaseCallbackHandler]:
    """The LangChain callbacks every graph run gets: Agent Lightning's handler records the graph, its nodes and
    their LLM calls as spans of the rollout (joined with the gateway's spans, which hold the token ids)."""
    return [LightningCallbackHandler()]


@agl.rollout
async def calc_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    """Answer ``task["question"]``; the reward is 1.0 when the final number equals ``task["answer"]``."""
    state: CalcState = await build_graph(llm).ainvoke(
        {"question": task["question"]}, config={"callbacks": callbacks(), "run_name": "calc"}
    )
    return reward(state["answer"], task["answer"])


# --- the reward: lenient parsing of the final number ---------------------------------------------------------

# A number: thousands separators ("1,234"), decimals ("2.50"), a fraction ("3/4"). A minus sign counts only
# when it is not an operator between two numbers: "12-5" is 12 and 5, "= -7" is -7. The digits must not
# continue a word or another number ("x2", "1.2.3").
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)])[-\u2212])?(?<![\w.])"
    r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?P<decimals>\.[0-9]+)?(?:/(?P<denominator>[0-9]+))?"
)
_LATEX_FRACTION = re.compile(r"\\d?frac\{\s*([0-9]+)\s*\}\{\s*([0-9]+)\s*\}")


def final_number(text: str) -> float | None:
    """The last number written in ``text``, or ``None`` if it has none.

    Lenient about how it is written: ``"The answer is 1,234."`` -> 1234, ``"x = -7"`` -> -7,
    ``"12.50"`` -> 12.5, ``"3/4"`` and ``"\\frac{3}{4}"`` -> 0.75, ``"\\boxed{42}"`` -> 42.
    """
    found = None
    for match in _NUMBER.finditer(_LATEX_FRACTION.sub(r"\1/\2", text)):
        value = float(match["whole"].replace(",", "") + (match["decimals"] or ""))
        if match["denominator"] is not None:
            denominator = int(match["denominator"])
            if denominator == 0:
                continue
            value /= denominator
        found = -value if match["sign"] else value
    return found


def reward(text: str, answer: float, rel_tol: float = 1e-4) -> float:
    """1.0 when the last number in ``text`` is ``answer``, else 0.0.

    A whole-number answer must be said exactly (``53857`` is not ``53856``); any other answer (a fraction, a
    decimal) is right within ``rel_tol``, so ``0.33333`` and ``1/3`` both count for one third.
    """
    said = final_number(text)
    if said is None:
        return 0.0
    if float(answer).is_integer():
        return 1.0 if said == answer else 0.0
    return 1.0 if math.isclose(said, answer, rel_tol=rel_tol) else 0.0
