"""The research crew: a CrewAI crew of two agents, a ``researcher`` who looks the question's entity up in the corpus
and a ``writer`` who answers the question from what the researcher found.

    researcher --lookup(entity)--> the entity's record --> writer --> the answer

Two ``crewai.Agent``\\ s and two ``crewai.Task``\\ s run in order by a ``Crew`` (``Process.sequential``): the
research task's output is the writer's context. The researcher's one tool, :data:`lookup`, returns the entity's
line of the bundled corpus (``dataset.record``), and its result is the research task's output
(``result_as_answer=True``), so a task takes two LLM calls: the researcher's and the writer's. Each agent's model is
``crewai_llm(llm)`` (CrewAI's native OpenAI provider at the rollout's gateway URL), and
``agentlightning_crewai.instrument()`` records the run: the crew, its tasks, each agent's execution, its LLM calls
named after the agent's role, and the tool use; each request names its agent to the gateway too (so a trainer can
give one role a LoRA adapter of its own while the other keeps the base model). CrewAI's telemetry, trace uploads
and version check are off (``LOCAL_ONLY_ENVIRONMENT``, set here before CrewAI is imported).

Written for SmolLM2-135M-Instruct, whose chat template does not show the model the ``tools`` of a request: each
agent gets :data:`EXAMPLES`, a few worked questions as earlier turns of its conversation (CrewAI's own user message
with an example's question, and its answer), put there by a ``before_llm_call`` hook (:func:`with_examples`) on
this crew's calls only. The researcher's answer is a Hermes-style ``<tool_call>{...}</tool_call>``, which the engine
turns into an OpenAI tool call. The agent that is not being trained samples greedily (``crew_rollout(greedy=...)``;
:data:`research_crew`: the writer).

The reward (:func:`reward`) is 1.0 when the writer's answer names the value asked for and none of the entity's
other facts (lenient: any case, any spacing), else 0.0. A crew CrewAI stops on an error gets 0.0.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

# CrewAI's switches for telemetry, trace uploads, first-run trace collection and version check, off: the
# integration's LOCAL_ONLY_ENVIRONMENT (which instrument() sets too), written out because they must be set before
# CrewAI is imported (it decides on import whether its telemetry is on), and importing the integration imports CrewAI.
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true",
    CREWAI_DISABLE_TRACKING="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_TESTING="true",
    CREWAI_DISABLE_VERSION_CHECK="true",
)

from agentlightning_crewai import crewai_llm, instrument
from crewai import Agent, Crew, Process, Task
from crewai.hooks import LLMCallHookContext, register_before_llm_call_hook
from crewai.tools import tool

import agentlightning as agl
from agentlightning import semconv

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dataset.py, however this file is loaded
from dataset import CORPUS, FIELDS, record

# CrewAI warns on every call that it cannot count a local model's tokens exactly: it only estimates them.
logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)

__all__ = [
    "RESEARCHER",
    "WRITER",
    "ROLES",
    "CREW_NAME",
    "EXAMPLES",
    "lookup",
    "build_crew",
    "with_examples",
    "crew_rollout",
    "research_crew",
    "mentions",
    "reward",
    "looked_up",
]

RESEARCHER, WRITER = "researcher", "writer"
ROLES = (RESEARCHER, WRITER)
CREW_NAME = "research_crew"

#: Short on purpose: CrewAI turns role, goal and backstory into the system message of each call, and every token of
#: it is prompt the 135M model reads on every call.
RESEARCH_TASK = "Look up the entity this question is about: {question}"
WRITE_TASK = "Answer this question in one short sentence, from the research: {question}"

#: Invented places that are not in the corpus, for the worked examples.
EXAMPLE_RECORDS = {
    "Zorbia": "Zorbia: capital Quellmar; founder Tessa Rhun; founded 1688; export wool; river Ash; animal hawk.",
    "Mirrowdale": "Mirrowdale: capital Penhollow; founder Aldo Finch; founded 1790; export salt; river Tarn; "
    "animal elk.",
}


def _call(name: str, **arguments: object) -> str:
    """A tool call as the engine parses it (and as Hermes-style models write it)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


#: Each agent's worked examples, (question, reply) pairs, shown to it as earlier turns: CrewAI's own user message
#: for the example's question (and, for the writer, the example entity's record as the research), then the reply.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    RESEARCHER: [
        ("What is the capital of Zorbia?", _call("lookup", entity="Zorbia")),
        ("Who established Mirrowdale?", _call("lookup", entity="Mirrowdale")),
    ],
    WRITER: [
        ("What is the main export of Zorbia?", "The main export of Zorbia is wool."),
    ],
}

#: The roles that sample greedily whatever the resource says: the one not trained (README.md), so that the trained
#: one sees the same work of it before and after training.
GREEDY_ROLES: tuple[str, ...] = (WRITER,)

#: Completion caps: a lookup call is ~20 tokens, an answer sentence ~15. The LLM resource's ``max_tokens``, if set,
#: caps both.
MAX_TOKENS = {RESEARCHER: 48, WRITER: 40}


@tool("lookup", result_as_answer=True)
def lookup(entity: str) -> str:
    """Look up an entity (a place) in the corpus: its capital, founder, year founded, export, river and animal."""
    wanted = " ".join(str(entity).split()).strip(" .?!'\"").lower()
    for name in CORPUS:
        if name.lower() == wanted:
            return record(name)
    return f"No entry for {entity!r} in the corpus."


def build_crew(llm: agl.LLM, greedy: Collection[str] = ()) -> Crew:
    """The researcher and the writer, their two tasks in order, on ``llm`` (the rollout's gateway URL); the roles
    in ``greedy`` sample at temperature 0 whatever the resource says. The question is the kickoff input
    ``question``."""

    def model(role: str) -> Any:
        cap = llm.sampling_parameters.get("max_tokens")
        limit = min(MAX_TOKENS[role], cap) if isinstance(cap, int) else MAX_TOKENS[role]
        overrides: dict[str, Any] = {"temperature": 0.0} if role in greedy else {}
        # The model stops at the end of its first tool call: whatever it wrote after it would be ignored anyway.
        return crewai_llm(llm, max_tokens=limit, stop=["</tool_call>"], max_retries=0, **overrides)

    researcher = Agent(
        role=RESEARCHER,
        goal="Look up the entity the question is about.",
        backstory="You call the lookup tool.",
        llm=model(RESEARCHER),
        tools=[lookup],
        max_iter=1,
        allow_delegation=False,
    )
    writer = Agent(
        role=WRITER,
        goal="Answer the question from the research.",
        backstory="You write one short sentence.",
        llm=model(WRITER),
        max_iter=1,
        allow_delegation=False,
    )
    research = Task(description=RESEARCH_TASK, expected_output="the entity's record", agent=researcher)
    write = Task(description=WRITE_TASK, expected_output="one sentence", agent=writer, context=[research])
    return Crew(name=CREW_NAME, agents=[researcher, writer], tasks=[research, write], process=Process.sequential)


def with_examples(context: LLMCallHookContext) -> None:
    """A ``before_llm_call`` hook: before this crew's first call of each agent, its :data:`EXAMPLES` as earlier
    turns (CrewAI's own user message, with the example's question and research in place of the real ones)."""
    crew, agent = context.crew, context.agent
    if getattr(crew, "name", None) != CREW_NAME or agent is None or str(agent.role) not in EXAMPLES:
        return
    messages = context.messages
    users = [i for i, message in enumerate(messages) if message.get("role") == "user"]
    if len(users) != 1 or any(message.get("role") == "assistant" for message in messages):
        return  # not the agent's first call, or the examples are in already
    question = _question_of(context)
    asked = str(messages[users[0]].get("content", ""))
    if not question or question not in asked:
        return
    research = context.task.context and re.search(r"context you're working with:\n(.*?)(?:\n\n|$)", asked, re.S)
    turns: list[Any] = []
    for example_question, reply in EXAMPLES[str(agent.role)]:
        content = asked.replace(question, example_question)
        if research:
            entity = next(name for name in EXAMPLE_RECORDS if name in example_question)
            content = content.replace(research.group(1), EXAMPLE_RECORDS[entity])
        turns += [{"role": "user", "content": content}, {"role": "assistant", "content": reply}]
    messages[users[0] : users[0]] = turns


def _question_of(context: LLMCallHookContext) -> str:
    description = str(getattr(context.task, "description", ""))
    for template in (RESEARCH_TASK, WRITE_TASK):
        prefix = template.split("{question}")[0]
        if description.startswith(prefix):
            return description[len(prefix) :]
    return ""


_hooked = False


def _hook() -> None:
    global _hooked
    if not _hooked:  # CrewAI's hooks are global: one registration, which acts on this crew's calls only
        register_before_llm_call_hook(with_examples)
        _hooked = True


def crew_rollout(greedy: Collection[str] = GREEDY_ROLES) -> agl.LitAgent:
    """The crew as an agent to train or run: ``@agl.rollout``, with the roles in ``greedy`` sampling greedily
    (:data:`research_crew` is the one with the default, the writer greedy)."""

    @agl.rollout
    def research_crew(task: dict[str, Any], llm: agl.LLM) -> float:
        """Look ``task["question"]`` up and answer it; the reward is 1.0 when the answer names ``task["answer"]``
        and none of the entity's other facts."""
        instrument()  # idempotent: here so that any process running the agent records it
        _hook()
        try:
            result = build_crew(llm, greedy).kickoff(inputs={"question": str(task["question"])})
        except Exception:  # CrewAI gave up on the run (a reply it could not use, too many iterations)
            return 0.0
        return reward(result.raw, str(task["entity"]), str(task["field"]))

    return research_crew


#: The crew, the researcher sampling as the resource says and the writer greedily.
research_crew = crew_rollout()


# --- the reward -------------------------------------------------------------------------------------------------


def mentions(text: str, value: str) -> bool:
    """Whether ``text`` names ``value`` as words of its own: any case, any spacing (``"Amber  run"`` names
    ``"Amber Run"``; ``"1712s"`` and ``"Iskar"`` do not name ``"1712"`` and ``"Isk"``)."""
    words = r"\s+".join(re.escape(word) for word in value.split())
    return re.search(rf"(?<!\w){words}(?!\w)", text, re.IGNORECASE) is not None


def reward(text: str, entity: str, field: str) -> float:
    """1.0 when ``text`` names ``entity``'s ``field`` and none of its other facts (an answer that copies the whole
    record is not an answer), else 0.0."""
    values = dict(zip(FIELDS, CORPUS[entity], strict=True))
    if not mentions(text, values.pop(field)):
        return 0.0
    return 0.0 if any(mentions(text, other) for other in values.values()) else 1.0


def looked_up(spans: Sequence[agl.Span]) -> str | None:
    """The entity the researcher looked up (the ``lookup`` tool's ``entity`` argument), or ``None`` if it called
    no tool."""
    for span in spans:
        if span.attributes.get(semconv.GEN_AI_TOOL_NAME) == "lookup":
            arguments = json.loads(str(span.attributes.get(semconv.GEN_AI_TOOL_CALL_ARGUMENTS) or "{}"))
            return str(arguments.get("entity", "")) if isinstance(arguments, dict) else ""
    return None
