"""From the spans of one attempt to chat examples: what SFT and APO consume.

Each LLM call of a selected agent becomes one :class:`ChatExample`: the call's input messages
followed by its output message(s) (tool calls kept as recorded), the tools offered to the model,
the agent's name, and the attempt's final reward. Calls, agents, selection and rewards are read
exactly as :class:`~agentlightning.adapter.TraceToTrajectory` reads them (see
:mod:`agentlightning.adapter.trajectory`): calls inside a reward computation are left out, and
examples come in the order of the calls, ``(end_time, sequence)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field, JsonValue

from agentlightning.adapter.trajectory import AgentSelector, TraceToTrajectory
from agentlightning.types import Span

__all__ = ["ChatExample", "TraceToMessages"]


class ChatExample(BaseModel):
    """One LLM call as a chat conversation: the prompt messages, then the model's response."""

    #: The call's input messages followed by its output message(s), OpenAI-style as recorded.
    messages: list[JsonValue] = Field(default_factory=list)
    #: Tool definitions offered to the model, ``None`` when none were recorded.
    tools: list[JsonValue] | None = None
    agent_name: str | None = None
    #: The final reward of the attempt the call belongs to (``None`` if it recorded none).
    reward: float | None = None
    #: The LLM-call span the example comes from.
    span_id: str


class TraceToMessages:
    """Turns the spans of one attempt into one :class:`ChatExample` per selected LLM call.

    Args:
        agents: whose calls become examples, as for :class:`~agentlightning.adapter.TraceToTrajectory`:
            ``None`` (default) for every call, a collection of agent names, or a predicate on the name.
    """

    def __init__(self, agents: AgentSelector = None) -> None:
        self._trajectory = TraceToTrajectory(agents)

    @property
    def agents(self) -> AgentSelector:
        """The agent selector this adapter was built with."""
        return self._trajectory.agents

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agents={self.agents!r})"

    def adapt(self, spans: Sequence[Span]) -> list[ChatExample]:
        """The chat examples of the attempt that ``spans`` record, in call order.

        Raises:
            ValueError: if the spans belong to more than one attempt.
        """
        trajectory = self._trajectory.adapt(spans)
        return [
            ChatExample(
                messages=[*transition.input_messages, *transition.output_messages],
                tools=transition.tools,
                agent_name=transition.agent_name,
                reward=trajectory.final_reward,
                span_id=transition.span_id,
            )
            for transition in trajectory.transitions
        ]
