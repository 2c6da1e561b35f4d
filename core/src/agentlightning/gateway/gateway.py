"""The gateway: started by trainers in-process, or on its own with ``agl gateway``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue

from agentlightning.gateway.app import GatewayConfig, GatewayStatistics, create_gateway_app
from agentlightning.server.serve import HttpServer
from agentlightning.store.base import LightningStore
from agentlightning.types import LLM

__all__ = ["Gateway"]


class Gateway(HttpServer):
    """An OpenAI-compatible proxy in front of ``upstream`` that records every call into its rollout.

    Calls reach it at ``{url}/chat/completions`` (or ``completions``, ``models``) with the rollout,
    attempt and optionally the agent in the URL (``/rollouts/{rid}/attempts/{aid}[/agents/{name}]/v1/…``)
    or in ``x-agentlightning-rollout-id`` / ``-attempt-id`` / ``-agent`` headers. Publish :meth:`llm`
    as a resource: runners then hand each rollout a URL that names it, so agent code needs no change.
    Each call becomes one span (``chat <model>``, kind client) with the request and response messages,
    tools, usage, finish reasons, and the exact prompt / completion token ids and logprobs when the
    upstream returns them (vLLM and ``agentlightning-engine`` do; hosted APIs do not, so set
    ``request_token_ids=False`` for those).

    ``agent_models`` routes calls by agent: a call attributed to an agent named there goes upstream with that
    model name instead of the one asked for, so that, say, each trained agent reaches its own LoRA adapter while
    the others reach the base model.
    """

    def __init__(
        self,
        upstream: str,
        store: LightningStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        request_token_ids: bool = True,
        upstream_api_key: str | None = None,
        timeout: float = 600.0,
        agent_models: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        config = GatewayConfig(upstream, request_token_ids, upstream_api_key, timeout, dict(agent_models or {}))
        app, self._proxy = create_gateway_app(store, config)
        super().__init__(app, host=host, port=port)

    @property
    def url(self) -> str:
        """The OpenAI base URL of the gateway (``http://host:port/v1``)."""
        return super().url + "/v1"

    @property
    def statistics(self) -> GatewayStatistics:
        """What the gateway did so far."""
        return self._proxy.stats

    def llm(self, model: str, **sampling_parameters: JsonValue) -> LLM:
        """An ``agl.LLM`` resource for this gateway: runners give each rollout its own attributed URL."""
        return LLM(base_url=self.url, model=model, sampling_parameters=dict(sampling_parameters), gateway=True)

    def start(self) -> Gateway:
        """Start serving in a background thread."""
        super().start()
        return self

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
