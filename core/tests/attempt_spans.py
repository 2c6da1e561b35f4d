"""Spans of one attempt built by hand, for the adapter tests: LLM calls, rewards, agents, reward computations."""

from __future__ import annotations

import secrets

import agentlightning as agl
from agentlightning import semconv
from agentlightning.adapter import AgentSelector, TraceToTrajectory

TRACE_ID = "ab" * 16


class Attempt:
    """Spans of one attempt, built by hand on an explicit clock, numbered in the order they are added."""

    def __init__(self, rollout_id: str = "ro-1", attempt_id: str = "at-1") -> None:
        self.rollout_id = rollout_id
        self.attempt_id = attempt_id
        self.spans: list[agl.Span] = []

    def span(
        self,
        name: str,
        start: float,
        end: float | None = None,
        parent: agl.Span | None = None,
        attributes: agl.Attributes | None = None,
    ) -> agl.Span:
        span = agl.Span(
            rollout_id=self.rollout_id,
            attempt_id=self.attempt_id,
            sequence_id=len(self.spans) + 1,
            trace_id=TRACE_ID,
            span_id=secrets.token_hex(8),
            parent_id=parent.span_id if parent is not None else None,
            name=name,
            start_time=start,
            end_time=start if end is None else end,
            attributes=attributes or {},
        )
        self.spans.append(span)
        return span

    def call(
        self,
        start: float,
        end: float,
        parent: agl.Span | None = None,
        agent: str | None = None,
        attributes: agl.Attributes | None = None,
    ) -> agl.Span:
        attributes = {**(attributes or {}), semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_CHAT}
        if agent is not None:
            attributes[semconv.GEN_AI_AGENT_NAME] = agent
        return self.span("chat", start, end, parent, attributes)

    def reward(self, value: float, at: float, parent: agl.Span | None = None) -> agl.Span:
        return self.span(semconv.SPAN_REWARD, at, at, parent, {semconv.AGL_REWARD_VALUE: value})

    def agent(self, name: str, start: float, end: float, parent: agl.Span | None = None) -> agl.Span:
        attributes: dict[str, agl.AttributeValue] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_INVOKE_AGENT,
            semconv.GEN_AI_AGENT_NAME: name,
        }
        return self.span(f"invoke_agent {name}", start, end, parent, attributes)

    def reward_computation(self, start: float, end: float, parent: agl.Span | None = None) -> agl.Span:
        attributes: dict[str, agl.AttributeValue] = {
            semconv.AGL_OPERATION_NAME: "judge",
            semconv.AGL_OPERATION_KIND: semconv.OPERATION_KIND_REWARD,
        }
        return self.span(semconv.SPAN_OPERATION, start, end, parent, attributes)


def adapt(spans: list[agl.Span], agents: AgentSelector = None) -> agl.Trajectory:
    return TraceToTrajectory(agents).adapt(spans)
