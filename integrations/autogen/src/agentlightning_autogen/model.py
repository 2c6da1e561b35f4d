"""The AutoGen model client for a rollout's ``agl.LLM``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from autogen_core.models import LLMMessage, ModelFamily, ModelInfo
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.openai import _openai_client as openai_client_module
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

import agentlightning as agl
from agentlightning.tracer import attribute_text
from agentlightning_autogen._messages import message_dicts, tool_definitions

__all__ = ["LOCAL_MODEL_INFO", "chat_completion_client"]

log = logging.getLogger("agentlightning.autogen")

#: What AutoGen needs to know of a model it does not know by name (a model served by an engine behind the
#: gateway): it can call tools, and nothing else is assumed.
LOCAL_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)

_CREATE_PARAMETERS = frozenset(CompletionCreateParamsBase.__annotations__)
# autogen-ext before 0.7.5 drops ``extra_body`` from a client's configuration (and refuses it per call).
_SENDS_EXTRA_BODY = "extra_body" in getattr(openai_client_module, "create_kwargs", ())


class _OfflineTokenCount(OpenAIChatCompletionClient):
    """``OpenAIChatCompletionClient`` counting tokens without tiktoken, which would download its encoding (for
    any model, OpenAI's included) the first time it counts. Dumped as, and loaded back as, the plain client."""

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """An estimate that errs high: one token per three bytes of the messages' and tools' JSON, plus a few per
        message. The engine's tokenizer is not at hand here; with it, the gateway records the exact counts."""
        text = attribute_text(message_dicts(messages))
        if tools:
            text += tool_definitions(tools)
        return 3 + 4 * len(messages) + -(-len(text.encode()) // 3)


def chat_completion_client(llm: agl.LLM, **kwargs: Any) -> OpenAIChatCompletionClient:
    """An ``OpenAIChatCompletionClient`` for ``llm``: its URL (the rollout's gateway URL), model name and key, with
    :data:`LOCAL_MODEL_INFO` (AutoGen refuses model names it does not know without one) and the LLM's sampling
    parameters; ``kwargs`` (any ``OpenAIChatCompletionClient`` argument: ``max_tokens``, ``model_info``,
    ``parallel_tool_calls``…) win.

    Nothing reaches the network but ``llm.base_url``: token counting (``count_tokens``, used by
    ``TokenLimitedChatCompletionContext``) is an offline estimate instead of tiktoken's, which downloads its
    encodings. Sampling parameters that OpenAI's API has no field for (``top_k``, ``repetition_penalty``…) are
    sent in ``extra_body`` (autogen-ext 0.7.5 and later; earlier ones cannot send them, and a warning says so).
    """
    config: dict[str, Any] = {
        "model": llm.model,
        "base_url": llm.base_url,
        "api_key": llm.api_key or "unused",
        "model_info": LOCAL_MODEL_INFO,
    }
    extra_body: dict[str, Any] = {}
    for key, value in llm.sampling_parameters.items():
        if key in _CREATE_PARAMETERS:
            config[key] = value
        else:
            extra_body[key] = value
    config.update(kwargs)
    if extra_body:
        if _SENDS_EXTRA_BODY:
            config["extra_body"] = {**extra_body, **config.get("extra_body", {})}
        else:
            log.warning(
                "autogen-ext before 0.7.5 cannot send sampling parameters OpenAI's API has no field for, so %s "
                "are not sent. Upgrade autogen-ext to 0.7.5 or later to send them (in extra_body).",
                ", ".join(sorted(extra_body)),
            )
    return _OfflineTokenCount(**config)
