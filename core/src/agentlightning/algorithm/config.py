"""Settings the trainers share: LoRA, and the error a setting out of range raises."""

from __future__ import annotations

from dataclasses import dataclass

from agentlightning.errors import AgentLightningError

__all__ = ["ConfigError", "LoraSettings"]


class ConfigError(AgentLightningError, ValueError):
    """A trainer's setting is out of range or contradicts another; the message names the field and what it takes."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA (Hu et al. 2021) instead of full fine-tuning: ``W x + (alpha / rank) · B A x`` on the target modules.

    Attributes:
        rank: the rank ``r`` of ``B A``.
        alpha: the scale numerator; the update is scaled by ``alpha / rank``.
        target_modules: names of the linear layers that get an adapter (Llama / SmolLM2 names by default).
        adapter_per_agent: one adapter per trained agent on the one base model (``agents`` must then name
            them). The engine serves each as ``<model>@<agent>`` and the gateway sends the calls attributed to
            that agent there, while the other agents' calls get the base model. Otherwise every trained agent
            shares one adapter, which then serves every call. LightningRL only: SFT trains one adapter.
    """

    rank: int = 16
    alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    adapter_per_agent: bool = False

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoraSettings.rank must be at least 1, got {self.rank}.")
        if self.alpha < 1:
            raise ConfigError(f"LoraSettings.alpha must be at least 1, got {self.alpha}.")
        if not self.target_modules:
            raise ConfigError("LoraSettings.target_modules is empty; name at least one module (e.g. 'q_proj').")
