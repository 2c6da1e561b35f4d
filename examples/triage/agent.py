"""The triage agent: OpenAI Agents SDK agents, a ``triage`` agent handing each question off to one of two specialists.

    triage --transfer_to_math--> math   (tools: add, multiply)
           --transfer_to_units-> units  (tool: convert)

Three ``agents.Agent``\\ s run by ``Runner.run``: ``triage`` hands the question off (the SDK's handoffs are tools
named ``transfer_to_<agent>``), the specialist answers it with one call of its ``@function_tool``, and the tool's
result is the run's final output (``tool_use_behavior="stop_on_first_tool"``). So a task takes two LLM calls: the
triage's and the specialist's. Every agent's model is ``chat_completions_model(llm)`` (Chat Completions at the
rollout's gateway URL) and ``agentlightning_openai_agents.instrument()`` records the run: agent runs, the hand-off,
the tool call, and each LLM call named after the agent that made it, which the gateway learns from the request
too (so a trainer can give ``units`` its own LoRA adapter while ``triage`` and ``math`` keep the base model).

Written for SmolLM2-135M-Instruct, whose chat template does not show the model the ``tools`` of a request:
each agent's instructions say which tool calls it may write, and :data:`EXAMPLES` gives it a few worked
questions as earlier turns of its conversation (:func:`with_examples`, the run's ``call_model_input_filter``).
Examples written inside the instructions did not work: the 135M model answered the question itself
(README.md has the figures). The engine turns the model's Hermes-style ``<tool_call>{...}</tool_call>`` text into
OpenAI tool calls. ``triage`` decides greedily (``TRIAGE_TEMPERATURE``): it is not trained here, and a steady
router keeps each specialist's share of the questions the same before and after training.

The reward is 1.0 when the last number of the final output equals the task's answer (:func:`final_number` is
lenient about how it is written), else 0.0; a run the SDK stops (a call to a tool that does not exist, too many
turns) gets 0.0. :func:`specialist` reads from a rollout's spans which agent the triage handed the task to.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentlightning_openai_agents import HANDOFF_TO, chat_completions_model, instrument, model_settings
from agents import Agent, ModelSettings, RunConfig, Runner, function_tool, handoff
from agents.exceptions import AgentsException
from agents.extensions.handoff_filters import remove_all_tools
from agents.run import CallModelData, ModelInputData

import agentlightning as agl

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dataset.py, however this file is loaded
from dataset import convert as convert_quantity

__all__ = [
    "TRIAGE",
    "MATH",
    "UNITS",
    "SPECIALISTS",
    "EXAMPLES",
    "triage_agent",
    "build_agents",
    "with_examples",
    "specialist",
    "final_number",
    "reward",
]

TRIAGE, MATH, UNITS = "triage", "math", "units"
SPECIALISTS = (MATH, UNITS)

TRIAGE_INSTRUCTIONS = (
    "You are triage. You never answer. A question that names units (km, m, cm, mm, kg, g, hours, minutes, seconds, "
    'litres, ml) goes to units: <tool_call>{"name": "transfer_to_units", "arguments": {}}</tool_call>\n'
    'A question with plus or times goes to math: <tool_call>{"name": "transfer_to_math", "arguments": {}}</tool_call>'
)
MATH_INSTRUCTIONS = "You are math. You answer with one call to the add or the multiply tool."
UNITS_INSTRUCTIONS = "You are units. You answer with one call to the convert tool."


def _call(name: str, **arguments: object) -> str:
    """A tool call as the engine parses it (and as Hermes-style models write it)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


#: Each agent's worked examples, (question, reply) pairs shown to it as earlier turns of its conversation. The
#: 135M model copies the format from these; what it must still get right is the choice (which specialist, which
#: units, which operation) and the numbers. The units agent has two, on purpose: with four it was right more
#: than half the time untrained (README.md), leaving less for training to show. The triage's instructions and
#: examples are as they are on purpose too: in another order, fewer, or with shorter rules, they made the 135M
#: model send nearly every question to one specialist.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    TRIAGE: [
        ("Convert 4 km to m.", _call("transfer_to_units")),
        ("What is 3 plus 4?", _call("transfer_to_math")),
        ("How many grams are in 2 kilograms?", _call("transfer_to_units")),
        ("What is 6 times 2?", _call("transfer_to_math")),
        ("What is 3 hours in minutes?", _call("transfer_to_units")),
        ("Compute 8 plus 1.", _call("transfer_to_math")),
        ("Convert 5 l to ml.", _call("transfer_to_units")),
        ("How much is 7 times 9?", _call("transfer_to_math")),
    ],
    MATH: [
        ("What is 3 plus 4?", _call("add", a=3, b=4)),
        ("Compute 6 times 2.", _call("multiply", a=6, b=2)),
        ("How much is 5 plus 8?", _call("add", a=5, b=8)),
        ("What is 7 times 3?", _call("multiply", a=7, b=3)),
    ],
    UNITS: [
        ("Convert 4 km to m.", _call("convert", value=4, from_unit="km", to_unit="m")),
        ("How many seconds are in 2 minutes?", _call("convert", value=2, from_unit="min", to_unit="s")),
    ],
}

#: Completion caps: a hand-off is ~20 tokens, a specialist's tool call ~40. The LLM resource's ``max_tokens``, if
#: set, caps both.
TRIAGE_MAX_TOKENS = 32
SPECIALIST_MAX_TOKENS = 64
#: The router samples greedily whatever the resource says (module docstring).
TRIAGE_TEMPERATURE = 0.0
#: Triage, then the specialist: two turns. A third would be a model going round in circles.
MAX_TURNS = 3


def _say(number: float) -> str:
    """A number as a tool says it: whole numbers without a decimal point, others with up to 10 decimals, never in
    scientific notation (``3.7e-05`` would read as 5 to a reader of the last number)."""
    if float(number).is_integer():
        return str(int(number))
    return f"{number:.10f}".rstrip("0")


@function_tool
def add(a: float, b: float) -> str:
    """Add two numbers."""
    return _say(a + b)


@function_tool
def multiply(a: float, b: float) -> str:
    """Multiply two numbers."""
    return _say(a * b)


@function_tool
def convert(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value from one unit to another: km, m, cm, mm, kg, g, h, min, s, l, ml (or their names)."""
    try:
        return f"{_say(convert_quantity(value, from_unit, to_unit))} {to_unit}"
    except ValueError as error:  # the model hears what was wrong, as from any tool
        return str(error)


def _settings(llm: agl.LLM, max_tokens: int, **overrides: Any) -> ModelSettings:
    cap = llm.sampling_parameters.get("max_tokens")
    # The model stops at the end of its first tool call: whatever it wrote after it would be ignored anyway.
    return model_settings(
        llm,
        max_tokens=min(max_tokens, cap) if isinstance(cap, int) else max_tokens,
        stop=["</tool_call>"],
        **overrides,
    )


def build_agents(llm: agl.LLM) -> Agent[Any]:
    """The triage agent, with its two specialists to hand off to, all on ``llm`` (the rollout's gateway URL)."""
    model = chat_completions_model(llm)
    specialist_settings = _settings(llm, SPECIALIST_MAX_TOKENS)
    math_agent = Agent(
        name=MATH,
        instructions=MATH_INSTRUCTIONS,
        tools=[add, multiply],
        tool_use_behavior="stop_on_first_tool",
        model=model,
        model_settings=specialist_settings,
    )
    units_agent = Agent(
        name=UNITS,
        instructions=UNITS_INSTRUCTIONS,
        tools=[convert],
        tool_use_behavior="stop_on_first_tool",
        model=model,
        model_settings=specialist_settings,
    )
    # The specialist sees the question alone: the hand-off's call and output would reach SmolLM2 as an empty
    # assistant turn and a bare {"assistant": ...} message, which only confuse a small model.
    return Agent(
        name=TRIAGE,
        instructions=TRIAGE_INSTRUCTIONS,
        handoffs=[
            handoff(math_agent, input_filter=remove_all_tools),
            handoff(units_agent, input_filter=remove_all_tools),
        ],
        model=model,
        model_settings=_settings(llm, TRIAGE_MAX_TOKENS, temperature=TRIAGE_TEMPERATURE),
    )


def with_examples(data: CallModelData[Any]) -> ModelInputData:
    """The model input of each call with the calling agent's :data:`EXAMPLES` put first, as earlier turns."""
    turns: list[Any] = []
    for question, reply in EXAMPLES.get(data.agent.name, []):
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return ModelInputData(input=turns + list(data.model_data.input), instructions=data.model_data.instructions)


@agl.rollout
async def triage_agent(task: dict[str, Any], llm: agl.LLM) -> float:
    """Route ``task["question"]`` and answer it; the reward is 1.0 when the final number is ``task["answer"]``."""
    instrument()  # idempotent: here so that any process running the agent records it
    try:
        result = await Runner.run(
            build_agents(llm),
            str(task["question"]),
            max_turns=MAX_TURNS,
            run_config=RunConfig(workflow_name="triage", call_model_input_filter=with_examples),
        )
    except AgentsException:  # the model called a tool that does not exist, or went round in circles
        return 0.0
    return reward(str(result.final_output), float(task["answer"]))


def specialist(spans: Sequence[agl.Span]) -> str | None:
    """The agent the triage handed the task to, read from the run's hand-off span; ``None`` if it handed off
    to none."""
    for span in spans:
        target = span.attributes.get(HANDOFF_TO)
        if target is not None:
            return str(target)
    return None


# --- the reward: lenient parsing of the final number ---------------------------------------------------------

# A number: thousands separators ("5,000"), decimals ("0.25"). A minus sign counts only when it is not an
# operator between two numbers ("= -7" is -7, "12-5" is 12 and 5). The digits must not continue a word or
# another number ("x2", "1.2.3").
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)])[-\u2212])?(?<![\w.])(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?P<decimals>\.[0-9]+)?"
)


def final_number(text: str) -> float | None:
    """The last number written in ``text``, or ``None`` if it has none.

    Lenient about how it is written: ``"5000 m"`` -> 5000, ``"The answer is 5,000."`` -> 5000,
    ``"0.25 kg"`` -> 0.25, ``"x = -7"`` -> -7, ``"3 km = 3000 m"`` -> 3000.
    """
    found = None
    for match in _NUMBER.finditer(text):
        value = float(match["whole"].replace(",", "") + (match["decimals"] or ""))
        found = -value if match["sign"] else value
    return found


def reward(text: str, answer: float, rel_tol: float = 1e-4) -> float:
    """1.0 when the last number in ``text`` is ``answer``, else 0.0: a whole-number answer exactly, any other
    (``0.11666667`` hours) within ``rel_tol``."""
    said = final_number(text)
    if said is None:
        return 0.0
    if float(answer).is_integer():
        return 1.0 if said == answer else 0.0
    return 1.0 if math.isclose(said, answer, rel_tol=rel_tol) else 0.0
