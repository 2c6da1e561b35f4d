"""Hand-made transitions, trajectories and rollouts with known rewards, for the LightningRL tests."""

from __future__ import annotations

from agentlightning_rl import CreditedTrajectory

from agentlightning.types import Trajectory, Transition


def call(
    sequence: int = 0,
    *,
    agent: str | None = "agent",
    reward: float | None = None,
    prompt: list[int] | None = None,
    completion: list[int] | None = None,
    logprobs: list[float] | None = None,
    end: float | None = None,
) -> Transition:
    """A transition; token ids default to a short prompt and completion, logprobs to one per completion token."""
    prompt = [1, 2, 3] if prompt is None else prompt
    completion = [4, 5] if completion is None else completion
    return Transition(
        span_id=f"{sequence:016x}",
        sequence=sequence,
        agent_name=agent,
        prompt_token_ids=prompt,
        completion_token_ids=completion,
        logprobs=[-1.0] * len(completion) if logprobs is None else logprobs,
        reward=reward,
        start_time=float(sequence),
        end_time=float(sequence) + 0.5 if end is None else end,
    )


def trajectory(*transitions: Transition, final: float | None = 1.0, rollout: str = "r0") -> Trajectory:
    """A trajectory of ``transitions`` (renumbered in order) with final reward ``final``."""
    numbered = [t.model_copy(update={"sequence": i}) for i, t in enumerate(transitions)]
    return Trajectory(rollout_id=rollout, attempt_id=f"{rollout}-a", transitions=numbered, final_reward=final)


def credited(returns: list[float], *, rollout: str, prompts: list[list[int]] | None = None) -> CreditedTrajectory:
    """A rollout whose calls have the given returns (and optionally the given prompts)."""
    calls = [call(i, prompt=prompts[i] if prompts else [100 + i]) for i in range(len(returns))]
    return CreditedTrajectory(trajectory(*calls, rollout=rollout), list(returns))
