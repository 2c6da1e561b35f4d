"""The SDK model and model settings for a rollout's ``agl.LLM``."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from agents import ModelSettings, OpenAIChatCompletionsModel
from openai import AsyncOpenAI

import agentlightning as agl

__all__ = ["chat_completions_model", "model_settings"]

# One client (one connection pool, one TLS context) per event loop; each rollout gets a copy with its own URL.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncOpenAI] = weakref.WeakKeyDictionary()


def chat_completions_model(llm: agl.LLM, *, client: AsyncOpenAI | None = None) -> OpenAIChatCompletionsModel:
    """The Agents SDK model for ``llm``: the Chat Completions API at ``llm.base_url`` (the rollout's gateway URL),
    for ``Agent(model=...)`` or ``RunConfig(model=...)``.

    The SDK otherwise calls OpenAI's Responses API, which the gateway and the engines do not serve. ``client``
    (default: one shared per event loop) is copied with the LLM's URL and key, so rollouts share connections.
    """
    if client is None:
        loop = asyncio.get_running_loop()
        client = _clients.get(loop)
        if client is None:
            client = _clients[loop] = AsyncOpenAI(api_key="unused", base_url=llm.base_url, max_retries=0)
    return OpenAIChatCompletionsModel(
        model=llm.model, openai_client=client.with_options(base_url=llm.base_url, api_key=llm.api_key or "unused")
    )


def model_settings(llm: agl.LLM, **overrides: Any) -> ModelSettings:
    """The LLM's sampling parameters (temperature, top_p, max_tokens…) as SDK ``ModelSettings``, for
    ``Agent(model_settings=...)``; ``overrides`` win. Parameters the SDK has no field for go in ``extra_args``."""
    fields = set(ModelSettings.__dataclass_fields__)
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in {**llm.sampling_parameters, **overrides}.items():
        (known if key in fields else extra)[key] = value
    if extra:
        known["extra_args"] = {**(known.get("extra_args") or {}), **extra}
    return ModelSettings(**known)
