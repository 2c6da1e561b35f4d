"""Multi-agent selective training: whose calls are trained, and one LoRA adapter per trained agent.

``agents`` (``LightningRLConfig.agents``) selects the trained agents exactly as the adapter's selector
does: ``None`` for every call (calls of no agent too), a collection of names (one string is one name), or
a predicate on the name. The other agents' calls are the environment: they are simply not trained on.
Select *after* credit assignment (:func:`select_agents` on a
:class:`~agentlightning_rl.credit.CreditedTrajectory`), so that their calls still count as steps and the
rewards that follow them still flow to the trained agent's earlier calls.

Several agents can be trained at once. With ``LoraSettings.adapter_per_agent``, :class:`AgentAdapters`
puts one peft LoRA adapter per trained agent on the one base model, and :meth:`AgentAdapters.activate`
switches to an agent's adapter before each micro-batch (micro-batches never mix agents). peft leaves only
the active adapter trainable, so a micro-batch's gradient reaches its own agent's adapter and nothing else.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from agentlightning import AgentLightningError
from agentlightning.adapter import AgentSelector, agent_filter
from agentlightning_rl.config import LoraSettings
from agentlightning_rl.credit import CreditedTrajectory

__all__ = ["AgentAdapters", "UntrainedAgent", "agent_filter", "select_agents"]  # agent_filter: the core's

#: The adapter every trained agent shares when ``adapter_per_agent`` is off.
SHARED_ADAPTER = "agentlightning"


class UntrainedAgent(AgentLightningError):
    """A micro-batch holds calls of an agent that has no adapter of its own."""


def select_agents(credited: CreditedTrajectory, agents: AgentSelector) -> CreditedTrajectory:
    """The trained agents' calls of ``credited``, with their returns; ``Transition.sequence`` renumbered 0, 1, …"""
    if agents is None:
        return credited
    selected = agent_filter(agents)
    kept = [(t, g) for t, g in zip(credited.transitions, credited.returns, strict=True) if selected(t.agent_name)]
    transitions = [t if t.sequence == i else t.model_copy(update={"sequence": i}) for i, (t, _) in enumerate(kept)]
    trajectory = credited.trajectory.model_copy(update={"transitions": transitions})
    return CreditedTrajectory(trajectory, [g for _, g in kept])


class AgentAdapters:
    """LoRA adapters on one base model: one per trained agent, or one that all share.

    Wraps ``model`` (a Hugging Face causal LM) in a peft model in place: its target modules gain LoRA layers
    and its base weights are frozen, so an engine serving the same module generates with the active
    adapter. :attr:`model` is the peft model to train and to give the optimizer.

    Args:
        model: the causal LM.
        settings: rank, alpha, dropout and target modules of every adapter.
        agents: the trained agents, each of which gets its own adapter; ``None`` for one shared adapter.
    """

    def __init__(self, model: Any, settings: LoraSettings, agents: list[str] | None = None) -> None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
        )
        self.per_agent = agents is not None
        self._adapter_of: dict[str, str] = {}
        if agents is not None:
            if not agents:
                raise ValueError("AgentAdapters needs at least one agent name, or agents=None for a shared adapter.")
            for agent in agents:
                self._adapter_of[agent] = _adapter_name(agent, set(self._adapter_of.values()))
        names = list(self._adapter_of.values()) or [SHARED_ADAPTER]
        with warnings.catch_warnings():
            # peft asks transformers whether gradient checkpointing is on through a deprecated name; nothing the
            # caller can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model: Any = get_peft_model(model, config, adapter_name=names[0])
        for name in names[1:]:
            self.model.add_adapter(name, config)
        self.model.set_adapter(names[0])

    @property
    def adapter_names(self) -> dict[str, str]:
        """Agent name → adapter name (empty with a shared adapter)."""
        return dict(self._adapter_of)

    def activate(self, agent_name: str | None) -> str:
        """Make ``agent_name``'s adapter the active (and only trainable) one; returns the adapter's name.

        Raises:
            UntrainedAgent: adapters are per agent and ``agent_name`` has none.
        """
        if not self.per_agent:
            return SHARED_ADAPTER
        adapter = self._adapter_of.get(agent_name) if agent_name is not None else None
        if adapter is None:
            raise UntrainedAgent(
                f"Calls of agent {agent_name!r} reached training, but only {sorted(self._adapter_of)} have an adapter. "
                "Select the trained agents' calls first (select_agents with the same agents=)."
            )
        if self.model.active_adapter != adapter:
            self.model.set_adapter(adapter)
        return adapter


def _adapter_name(agent: str, taken: set[str]) -> str:
    # peft keys adapters in ModuleDicts: no dots, and a name inside "lora_" would clash with its own prefixes.
    base = "agent_" + re.sub(r"[^0-9A-Za-z_]", "_", agent)
    name, suffix = base, 1
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    return name
