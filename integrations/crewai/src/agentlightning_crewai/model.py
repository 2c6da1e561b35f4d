"""The CrewAI ``LLM`` for a rollout's ``agl.LLM``."""

from __future__ import annotations

from typing import Any

from crewai import LLM

import agentlightning as agl

__all__ = ["crewai_llm"]

# What CrewAI's native OpenAI provider takes as its own arguments; other sampling parameters go in extra_body.
_OWN_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stop",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "logprobs",
        "top_logprobs",
        "timeout",
        "max_retries",
    }
)


def crewai_llm(llm: agl.LLM, **kwargs: Any) -> LLM:
    """A CrewAI ``LLM`` for ``llm``: CrewAI's native OpenAI provider (no litellm) on ``llm.base_url`` (the
    rollout's gateway URL) with its model name, key and sampling parameters, for ``Agent(llm=...)``; ``kwargs``
    (any argument of CrewAI's ``LLM``) win. Sampling parameters OpenAI's API has no field for (``top_k``,
    ``repetition_penalty``…) are sent in ``extra_body``.
    """
    config: dict[str, Any] = {}
    extra_body: dict[str, Any] = {}
    for key, value in llm.sampling_parameters.items():
        (config if key in _OWN_PARAMETERS else extra_body)[key] = value
    config.update(kwargs)
    if extra_body:
        config["extra_body"] = {**extra_body, **config.get("extra_body", {})}
    return LLM(
        model=config.pop("model", f"openai/{llm.model}"),
        base_url=config.pop("base_url", llm.base_url),
        api_key=config.pop("api_key", llm.api_key or "unused"),
        **config,
    )
