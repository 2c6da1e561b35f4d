"""Hand-made stores: finished rollouts whose spans record LLM calls (with token ids) and a final reward."""

from __future__ import annotations

import json
from typing import Any

from agentlightning import semconv
from agentlightning.store.base import LightningStore
from agentlightning.types import AttemptStatus, Rollout, RolloutRequest, RolloutStatus, Span


def llm_call(
    agent: str | None,
    *,
    prompt: list[int],
    completion: list[int],
    messages: list[dict[str, Any]] | None = None,
    reply: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What one LLM call records, as the gateway records it (token ids, messages)."""
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_CHAT,
        semconv.AGL_LLM_GATEWAY: True,
        semconv.AGL_PROMPT_TOKEN_IDS: prompt,
        semconv.AGL_COMPLETION_TOKEN_IDS: completion,
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps(messages or [{"role": "user", "content": "hi"}]),
        semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps([reply or {"role": "assistant", "content": "hello"}]),
    }
    if agent is not None:
        attributes[semconv.GEN_AI_AGENT_NAME] = agent
    return attributes


async def finished_rollout(
    store: LightningStore,
    task: str,
    reward: float | None,
    calls: list[dict[str, Any]] | None = None,
    *,
    failed: bool = False,
) -> Rollout:
    """A rollout of ``task`` (its group id) that made ``calls`` (default: one call of agent "a") and then
    recorded ``reward`` (``None``: no reward); it ends succeeded, or failed."""
    attempted = await store.start_rollout(RolloutRequest(input=task, metadata={"group_id": task}))
    rollout_id, attempt_id = attempted.rollout_id, attempted.attempt.attempt_id
    calls = [llm_call("a", prompt=[1, 2, 3], completion=[4, 5])] if calls is None else calls
    spans = []
    for i, attributes in enumerate(calls):
        spans.append(_span(rollout_id, attempt_id, i, "chat", attributes))
    if reward is not None:
        spans.append(_span(rollout_id, attempt_id, len(calls), semconv.SPAN_REWARD, {semconv.AGL_REWARD_VALUE: reward}))
    if spans:
        await store.add_many_spans(spans)
    if failed:
        await store.update_rollout(rollout_id, status=RolloutStatus.FAILED)
    else:
        await store.update_attempt(rollout_id, attempt_id, status=AttemptStatus.SUCCEEDED)
    return await store.get_rollout_by_id(rollout_id)


def _span(rollout_id: str, attempt_id: str, i: int, name: str, attributes: dict[str, Any]) -> Span:
    return Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        trace_id=f"{abs(hash(rollout_id)):032x}"[-32:],
        span_id=f"{i + 1:016x}",
        name=name,
        start_time=float(i),
        end_time=float(i) + 0.5,
        attributes=attributes,
    )
