"""Transitions and trajectories: the training view of one attempt.

An attempt's spans say everything that happened; a trajectory keeps what a trainer needs: the
ordered LLM calls of the selected agents (one :class:`Transition` each) and the rewards. The
adapters in :mod:`agentlightning.adapter` build them from spans.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, JsonValue

from agentlightning.errors import MissingTokenIds

__all__ = ["Transition", "Trajectory"]


class Transition(BaseModel):
    """One LLM call of a selected agent, as a trainer sees it.

    Messages and tools are kept as recorded (OpenAI-style chat messages, usually dicts); a message
    attribute that was not valid JSON appears as one plain string. Token ids and logprobs are
    present only when the call went through the gateway of an engine that returns them.
    """

    span_id: str
    #: 0-based position of this call among the trajectory's transitions.
    sequence: int = Field(ge=0)
    agent_name: str | None = None
    #: The response model if recorded, else the request model.
    model: str | None = None
    response_id: str | None = None
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    #: Log-probability of each completion token under the policy that sampled it.
    logprobs: list[float] | None = None
    input_messages: list[JsonValue] = Field(default_factory=list)
    output_messages: list[JsonValue] = Field(default_factory=list)
    tools: list[JsonValue] | None = None
    #: Sum of the intermediate rewards assigned to this call; ``None`` when none was.
    reward: float | None = None
    start_time: float
    end_time: float | None = None

    @property
    def has_token_ids(self) -> bool:
        """Whether both the prompt and the completion token ids were recorded (what RL needs)."""
        return self.prompt_token_ids is not None and self.completion_token_ids is not None

    def token_ids(self) -> tuple[list[int], list[int]]:
        """The prompt and completion token ids; raises :class:`~agentlightning.MissingTokenIds` if not recorded."""
        if self.prompt_token_ids is None or self.completion_token_ids is None:
            raise MissingTokenIds(self.span_id, self.agent_name, self.model)
        return self.prompt_token_ids, self.completion_token_ids


class Trajectory(BaseModel):
    """The training view of one attempt: its selected LLM calls in order, and its rewards.

    ``rollout_id`` and ``attempt_id`` are ``None`` only for the trajectory of no spans at all.
    """

    rollout_id: str | None = None
    attempt_id: str | None = None
    transitions: list[Transition] = Field(default_factory=list)
    #: The last reward the attempt recorded (the agent's returned reward); ``None`` if it recorded none.
    final_reward: float | None = None
    #: Intermediate rewards recorded before any LLM call, in the order they were recorded.
    unassigned_rewards: list[float] = Field(default_factory=list)
    #: Sorted names of the agents whose LLM calls the attempt holds, selected or not.
    agents: list[str] = Field(default_factory=list)
