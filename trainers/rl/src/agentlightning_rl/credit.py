# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""Credit assignment: from a trajectory's rewards to one return per LLM call.

A trajectory holds ``T`` calls ``t = 0 … T-1`` in order (:class:`~agentlightning.types.Transition`), the
intermediate rewards the adapter assigned to each (``r_t = Transition.reward``, 0 when ``None``: an
``agl.emit_reward`` recorded after call ``t`` and before call ``t+1``) and the final reward ``R``
(``Trajectory.final_reward``, the agent's returned reward). The modes:

- ``identical`` — every call gets the final reward, as in the Agent Lightning paper (Luo et al. 2025)::

      G_t = R

- ``discounted`` — the final reward, discounted by ``γ`` for every call that came after ``t``::

      G_t = γ^(T-1-t) · R

- ``intermediate`` — the discounted return-to-go: every reward recorded after call ``t`` counts for it,
  the final reward included (it comes after the last call)::

      G_t = Σ_{k=t}^{T-1} γ^(k-t) · r_k + γ^(T-1-t) · R,   i.e.   G_{T-1} = r_{T-1} + R,  G_t = r_t + γ · G_{t+1}

Rewards recorded before any call (``Trajectory.unassigned_rewards``) come before every call and count for
none. A "step" is one LLM call of the trajectory: compute returns on the trajectory of *every* agent's
calls (adapt with ``agents=None``) and select the trained agents afterwards
(:func:`agentlightning_rl.agents.select_agents`), so that rewards following another agent's calls and the
steps those calls take still count, as they would in the environment the trained agent lives in.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentlightning import AgentLightningError
from agentlightning.types import Trajectory, Transition
from agentlightning_rl.config import CreditMode, LightningRLConfig

__all__ = ["CreditedTrajectory", "MissingFinalReward", "credit_trajectory", "returns"]


class MissingFinalReward(AgentLightningError):
    """A trajectory has no final reward and the configuration gives none to use instead."""

    def __init__(self, rollout_id: str | None, attempt_id: str | None) -> None:
        self.rollout_id = rollout_id
        super().__init__(
            f"Rollout {rollout_id} (attempt {attempt_id}) recorded no final reward (did the agent fail or "
            "return None?). Set LightningRLConfig.missing_final_reward to the reward such attempts get (e.g. 0.0), "
            "or leave these trajectories out."
        )


@dataclass(frozen=True)
class CreditedTrajectory:
    """A trajectory with the return of each of its calls (``returns[i]`` belongs to ``trajectory.transitions[i]``)."""

    trajectory: Trajectory
    returns: list[float]

    def __post_init__(self) -> None:
        if len(self.returns) != len(self.trajectory.transitions):
            raise ValueError(
                f"CreditedTrajectory needs one return per transition: {len(self.returns)} returns for "
                f"{len(self.trajectory.transitions)} transitions."
            )

    @property
    def rollout_id(self) -> str | None:
        """The rollout the trajectory records."""
        return self.trajectory.rollout_id

    @property
    def transitions(self) -> list[Transition]:
        """The trajectory's calls, in order."""
        return self.trajectory.transitions


def returns(trajectory: Trajectory, mode: CreditMode, gamma: float, final_reward: float) -> list[float]:
    """The return ``G_t`` of every call of ``trajectory`` under ``mode`` (formulas in the module docstring).

    ``final_reward`` is ``R``, passed explicitly so that the caller decides what an attempt without one gets.
    """
    count = len(trajectory.transitions)
    if mode == "identical":
        return [final_reward] * count
    if mode == "discounted":
        return [gamma ** (count - 1 - t) * final_reward for t in range(count)]
    if mode == "intermediate":
        result = [0.0] * count
        to_go = final_reward  # what follows the last call: the final reward
        for t in range(count - 1, -1, -1):
            reward = trajectory.transitions[t].reward
            to_go = (reward or 0.0) + to_go
            result[t] = to_go
            to_go *= gamma  # one call earlier, everything after it is one step further away
        return result
    raise ValueError(f"Unknown credit mode {mode!r}; use 'identical', 'discounted' or 'intermediate'.")


def credit_trajectory(trajectory: Trajectory, config: LightningRLConfig) -> CreditedTrajectory:
    """The trajectory with its returns under ``config.credit`` / ``config.gamma``.

    A trajectory without a final reward gets ``config.missing_final_reward``.

    Raises:
        MissingFinalReward: the trajectory has no final reward and ``config.missing_final_reward`` is ``None``.
    """
    final_reward = trajectory.final_reward
    if final_reward is None:
        if config.missing_final_reward is None:
            raise MissingFinalReward(trajectory.rollout_id, trajectory.attempt_id)
        final_reward = config.missing_final_reward
    return CreditedTrajectory(trajectory, returns(trajectory, config.credit, config.gamma, final_reward))
