"""The calc team: two AutoGen AgentChat agents taking turns, a ``solver`` with a calculator and a ``verifier``.

    user question -> solver --calculator("60 - 12")--> "60 - 12 = 48"
                  -> verifier: "APPROVE" (the run ends) or a correction request (the solver tries again)

A ``RoundRobinGroupChat([solver, verifier])``: the solver answers with one call of its ``calculator`` tool (a safe
arithmetic evaluator) and the tool's result is its message to the team (``reflect_on_tool_use=False``); the
verifier reads the question and that result and approves it or asks for another try. The run ends at the
verifier's ``APPROVE`` or after :data:`MAX_MESSAGES` messages. Each agent's model client is
``chat_completion_client(llm)`` (AutoGen's OpenAI client on the rollout's gateway URL) and
``agentlightning_autogen.instrument()`` records the run: the team, each agent's turn, the tool call and each model
call, named after the agent that made it, which the gateway learns from the request too (so a trainer can give
``solver`` its own LoRA adapter while the ``verifier`` keeps the base model).

Written for SmolLM2-135M-Instruct, whose chat template does not show the model the ``tools`` of a request: the
solver's instructions say which call to write, and :data:`EXAMPLES` gives each agent a few worked questions as
earlier turns of its conversation (``UnboundedChatCompletionContext(initial_messages=...)``). The engine turns the
model's Hermes-style ``<tool_call>{...}</tool_call>`` text into OpenAI tool calls; :class:`HermesContext` writes
the solver's earlier calls back as that text (the template would show them as empty turns). The verifier decides
greedily (:data:`VERIFIER_TEMPERATURE`): it is not trained here, it is the solver's environment.

The reward is 1.0 when the last number of the solver's last message (its last calculator result, or its own text
when it called no tool) is the task's answer (:func:`final_number` is lenient about how it is written), else 0.0.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from agentlightning_autogen import chat_completion_client, instrument
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import FunctionCall
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import AssistantMessage, FunctionExecutionResultMessage, LLMMessage, UserMessage

import agentlightning as agl

# The gateway answers a call sent to an agent's own adapter as "<model>@<agent>"; AutoGen warns once that this is not
# the model it asked for. It is the point of the adapter, not a mistake.
warnings.filterwarnings("ignore", message="Resolved model mismatch", category=UserWarning)

__all__ = [
    "SOLVER",
    "VERIFIER",
    "AGENTS",
    "APPROVE",
    "WRONG",
    "EXAMPLES",
    "SOLVER_INSTRUCTIONS",
    "VERIFIER_INSTRUCTIONS",
    "HermesContext",
    "build_team",
    "calc_team",
    "calculator",
    "solver_said",
    "final_number",
    "reward",
]

SOLVER, VERIFIER = "solver", "verifier"
AGENTS = (SOLVER, VERIFIER)
APPROVE, WRONG = "APPROVE", "WRONG."

SOLVER_INSTRUCTIONS = (
    "You are solver. You answer with one call to the calculator tool, the question's numbers and operators written "
    'as an expression with + - * and digits: <tool_call>{"name": "calculator", "arguments": {"expression": "..."}}'
    "</tool_call>"
)
VERIFIER_INSTRUCTIONS = (
    f"You are verifier. You read the question and the solver's calculation. If the calculation is the question, "
    f"reply {APPROVE}. Otherwise reply {WRONG}"
)


def _call(name: str, **arguments: object) -> str:
    """A tool call as the engine parses it (and as Hermes-style models write it)."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


#: Each agent's worked examples, shown to it as earlier turns of its conversation: the solver's are (question,
#: reply) pairs, the verifier's (question, the solver's result, reply) triples, as the team shows it a run. The
#: 135M model copies the format from these; what it must still get right is the expression: the numbers in the
#: order the sentence means ("Subtract 12 from 60" is 60 - 12) and the operator its words name. The solver has one
#: example: a second one (in words) made no difference to the untrained rate where it was measured (README.md).
EXAMPLES: dict[str, list[tuple[str, ...]]] = {
    SOLVER: [
        ("What is 3 + 4?", _call("calculator", expression="3 + 4")),
    ],
    VERIFIER: [
        ("What is 3 plus 4?", "3 + 4 = 7", APPROVE),
        ("What is 6 times 2?", "6 + 2 = 8", f"{WRONG} Try again."),
        ("What is 9 minus 5 plus 1?", "9 - 5 + 1 = 5", APPROVE),
        ("What is 8 times 7?", "8 * 7 = 56", APPROVE),
    ],
}

#: Completion caps: a calculator call is ~30 tokens, a verdict a few. The LLM resource's ``max_tokens``, if set,
#: caps both.
SOLVER_MAX_TOKENS = 64
VERIFIER_MAX_TOKENS = 24
#: The verifier decides greedily whatever the resource says: it is not trained, and a steady verifier is the same
#: environment before and after training.
VERIFIER_TEMPERATURE = 0.0
#: The question, then solver, verifier, solver, verifier: the solver gets at most two tries.
MAX_MESSAGES = 5


# --- the calculator ------------------------------------------------------------------------------------------

_OPERATORS: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_MAX_EXPRESSION = 200  # characters; and no powers, so no result grows beyond a few hundred digits


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))  # type: ignore[no-any-return]
    raise ValueError("use numbers, + - * / and parentheses only")


def _say(number: int | float) -> str:
    """A number as the calculator says it: whole numbers without a decimal point, others with up to 10 decimals,
    never in scientific notation (``3.7e-05`` would read as 5 to a reader of the last number)."""
    if float(number).is_integer():
        return str(int(number))
    return f"{number:.10f}".rstrip("0")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression of numbers, + - * / and parentheses, e.g. "60 - 12 * 3"."""
    expression = expression.strip()
    try:
        if len(expression) > _MAX_EXPRESSION:
            raise ValueError(f"at most {_MAX_EXPRESSION} characters")
        value = _evaluate(ast.parse(expression.replace("×", "*").replace("−", "-"), mode="eval"))
    except ZeroDivisionError:
        return f"Error in {expression!r}: division by zero."
    except (SyntaxError, ValueError, TypeError) as error:  # the model hears what was wrong, as from any tool
        reason = error.msg if isinstance(error, SyntaxError) else str(error)
        return f"Error in {expression!r}: {reason}. Use numbers, + - * / and parentheses only."
    return f"{expression} = {_say(value)}"


# --- the team ------------------------------------------------------------------------------------------------


class HermesContext(UnboundedChatCompletionContext):
    """The agent's conversation with its earlier tool calls written back as the text the model wrote
    (``<tool_call>{...}</tool_call>``) and their results as a user turn. SmolLM2's chat template shows an
    assistant turn's ``tool_calls`` as an empty turn and a tool result without saying whose it is."""

    async def get_messages(self) -> list[LLMMessage]:
        """The messages the model is sent."""
        messages: list[LLMMessage] = []
        for message in await super().get_messages():
            if isinstance(message, AssistantMessage) and isinstance(message.content, list):
                calls = "".join(_written(call) for call in message.content)
                messages.append(AssistantMessage(content=calls, source=message.source))
            elif isinstance(message, FunctionExecutionResultMessage):
                results = "\n".join(result.content for result in message.content)
                messages.append(UserMessage(content=results, source="calculator"))
            else:
                messages.append(message)
        return messages


def _written(call: FunctionCall) -> str:
    try:
        arguments = json.loads(call.arguments)
    except json.JSONDecodeError:
        arguments = call.arguments
    return _call(call.name, **arguments) if isinstance(arguments, dict) else _call(call.name, raw=arguments)


def _examples(agent: str) -> list[LLMMessage]:
    messages: list[LLMMessage] = []
    for *turns, reply in EXAMPLES[agent]:
        messages += [UserMessage(content=turn, source="user" if i == 0 else SOLVER) for i, turn in enumerate(turns)]
        messages.append(AssistantMessage(content=reply, source=agent))
    return messages


def _client_settings(llm: agl.LLM, max_tokens: int) -> dict[str, Any]:
    cap = llm.sampling_parameters.get("max_tokens")
    return {"max_tokens": min(max_tokens, cap) if isinstance(cap, int) else max_tokens}


def build_team(llm: agl.LLM) -> RoundRobinGroupChat:
    """The solver and the verifier, taking turns, on ``llm`` (the rollout's gateway URL)."""
    solver = AssistantAgent(
        SOLVER,
        model_client=chat_completion_client(
            # The model stops at the end of its first tool call: whatever it wrote after it would be ignored anyway.
            llm,
            stop=["</tool_call>"],
            **_client_settings(llm, SOLVER_MAX_TOKENS),
        ),
        tools=[calculator],
        system_message=SOLVER_INSTRUCTIONS,
        model_context=HermesContext(initial_messages=_examples(SOLVER)),
        reflect_on_tool_use=False,
    )
    verifier = AssistantAgent(
        VERIFIER,
        model_client=chat_completion_client(
            llm, temperature=VERIFIER_TEMPERATURE, **_client_settings(llm, VERIFIER_MAX_TOKENS)
        ),
        system_message=VERIFIER_INSTRUCTIONS,
        model_context=UnboundedChatCompletionContext(initial_messages=_examples(VERIFIER)),
    )
    stop = TextMentionTermination(APPROVE, sources=[VERIFIER]) | MaxMessageTermination(MAX_MESSAGES)
    return RoundRobinGroupChat([solver, verifier], termination_condition=stop, name="calc_team")


def solver_said(messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> str:
    """The solver's last message to the team: its last calculator result, or its own text; ``""`` if none."""
    said = [m for m in messages if isinstance(m, BaseChatMessage) and m.source == SOLVER]
    return said[-1].to_text() if said else ""


@agl.rollout
async def calc_team(task: dict[str, Any], llm: agl.LLM) -> float:
    """Solve ``task["question"]`` as a team; the reward is 1.0 when the solver's final number is
    ``task["answer"]``."""
    instrument()  # idempotent: here so that any process running the agent records it
    result: TaskResult = await build_team(llm).run(task=str(task["question"]))
    return reward(solver_said(result.messages), float(task["answer"]))


# --- the reward: lenient parsing of the final number ---------------------------------------------------------

# A number: thousands separators ("5,000"), decimals ("0.25"). A minus sign counts only when it is not an
# operator between two numbers ("= -7" is -7, "12-5" is 12 and 5). The digits must not continue a word or
# another number ("x2", "1.2.3").
_NUMBER = re.compile(
    r"(?P<sign>(?<![\w)])[-\u2212])?(?<![\w.])(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?P<decimals>\.[0-9]+)?"
)


def final_number(text: str) -> float | None:
    """The last number written in ``text``, or ``None`` if it has none.

    Lenient about how it is written: ``"60 - 12 = 48"`` -> 48, ``"The answer is 5,000."`` -> 5000,
    ``"x = -7"`` -> -7, ``"12.50"`` -> 12.5.
    """
    found = None
    for match in _NUMBER.finditer(text):
        value = float(match["whole"].replace(",", "") + (match["decimals"] or ""))
        found = -value if match["sign"] else value
    return found


def reward(text: str, answer: float, rel_tol: float = 1e-4) -> float:
    """1.0 when the last number in ``text`` is ``answer``, else 0.0: a whole-number answer exactly, any other
    within ``rel_tol``."""
    said = final_number(text)
    if said is None:
        return 0.0
    if float(answer).is_integer():
        return 1.0 if said == answer else 0.0
    return 1.0 if math.isclose(said, answer, rel_tol=rel_tol) else 0.0
