"""The LLM gateway: every LLM call of an agent, recorded into its rollout with the exact token ids."""

from agentlightning.gateway.app import GatewayConfig, GatewayStatistics, create_gateway_app
from agentlightning.gateway.gateway import Gateway

__all__ = ["Gateway", "GatewayConfig", "GatewayStatistics", "create_gateway_app"]
