"""What the gateway records of one LLM call: span attributes from the request and the (assembled) response."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from agentlightning import semconv

__all__ = ["request_attributes", "response_attributes", "StreamAssembler", "parse_traceparent"]


def _dumps(value: Any) -> str:
    return to_json(value).decode()


def _int_list(value: Any) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    return None


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a W3C ``traceparent`` header, or ``None`` if absent or malformed."""
    if not header:
        return None
    parts = header.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    trace_id, span_id = parts[1].lower(), parts[2].lower()
    try:
        int(trace_id, 16), int(span_id, 16)
    except ValueError:
        return None
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        return None
    return trace_id, span_id


def request_attributes(body: dict[str, Any], operation: str) -> dict[str, Any]:
    """GenAI request attributes: model, sampling parameters, input messages (or prompt) and tools."""
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: operation,
        semconv.GEN_AI_PROVIDER_NAME: "openai",
        semconv.AGL_LLM_GATEWAY: True,
    }
    if isinstance(body.get("model"), str):
        attributes[semconv.GEN_AI_REQUEST_MODEL] = body["model"]
    for key, name in semconv.GEN_AI_REQUEST_PARAMETERS.items():
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
    if operation == semconv.GEN_AI_OPERATION_CHAT:
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = _dumps(body.get("messages", []))
    else:
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = _dumps([{"role": "user", "content": body.get("prompt")}])
    if body.get("tools"):
        attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = _dumps(body["tools"])
    return attributes


def _logprobs_of(choice: dict[str, Any]) -> list[float] | None:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):  # chat format
        values = [item.get("logprob") for item in content if isinstance(item, dict)]
    else:  # completions format
        values = logprobs.get("token_logprobs") or []
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numbers if len(numbers) == len(values) else None


def response_attributes(response: dict[str, Any], operation: str) -> dict[str, Any]:
    """GenAI response attributes plus the exact tokens: prompt / completion token ids and logprobs (choice 0)."""
    attributes: dict[str, Any] = {}
    if isinstance(response.get("id"), str):
        attributes[semconv.GEN_AI_RESPONSE_ID] = response["id"]
    if isinstance(response.get("model"), str):
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = response["model"]
    choices = [c for c in response.get("choices") or [] if isinstance(c, dict)]
    reasons = [c.get("finish_reason") for c in choices if isinstance(c.get("finish_reason"), str)]
    if reasons:
        attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    if operation == semconv.GEN_AI_OPERATION_CHAT:
        outputs = [c.get("message") for c in choices]
    else:
        outputs = [{"role": "assistant", "content": c.get("text")} for c in choices]
    attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = _dumps(outputs)
    usage = response.get("usage")
    if isinstance(usage, dict):
        for key, name in (
            ("prompt_tokens", semconv.GEN_AI_USAGE_INPUT_TOKENS),
            ("completion_tokens", semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
        ):
            if isinstance(usage.get(key), int):
                attributes[name] = usage[key]
    prompt_ids = _int_list(response.get("prompt_token_ids"))
    if prompt_ids is None and choices:  # vLLM's completions API puts them on the choice
        prompt_ids = _int_list(choices[0].get("prompt_token_ids"))
    if prompt_ids is not None:
        attributes[semconv.AGL_PROMPT_TOKEN_IDS] = prompt_ids
    if choices:
        completion_ids = _int_list(choices[0].get("token_ids"))
        if completion_ids is not None:
            attributes[semconv.AGL_COMPLETION_TOKEN_IDS] = completion_ids
        logprobs = _logprobs_of(choices[0])
        if logprobs is not None:
            attributes[semconv.AGL_COMPLETION_LOGPROBS] = logprobs
    return attributes


class StreamAssembler:
    """Rebuilds a whole response from the chunks of a streamed one (SSE ``data:`` payloads)."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.prompt_token_ids: list[int] | None = None
        self.choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        """Fold one chunk in."""
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if self.prompt_token_ids is None:
            self.prompt_token_ids = _int_list(chunk.get("prompt_token_ids"))
        for raw in chunk.get("choices") or []:
            if not isinstance(raw, dict):
                continue
            choice = self.choices.setdefault(
                int(raw.get("index") or 0),
                {"content": [], "tool_calls": {}, "token_ids": [], "logprobs": [], "finish_reason": None},
            )
            if self.prompt_token_ids is None:
                self.prompt_token_ids = _int_list(raw.get("prompt_token_ids"))
            delta = (
                raw.get("delta") if self.operation == semconv.GEN_AI_OPERATION_CHAT else {"content": raw.get("text")}
            )
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    choice["content"].append(delta["content"])
                for call in delta.get("tool_calls") or []:
                    if not isinstance(call, dict):
                        continue
                    slot = choice["tool_calls"].setdefault(
                        int(call.get("index") or 0), {"id": None, "type": "function", "name": "", "arguments": []}
                    )
                    slot["id"] = slot["id"] or call.get("id")
                    function = call.get("function") or {}
                    slot["name"] += function.get("name") or ""
                    slot["arguments"].append(function.get("arguments") or "")
            ids = _int_list(raw.get("token_ids"))
            if ids:
                choice["token_ids"].extend(ids)
            logprobs = _logprobs_of(raw)
            if logprobs:
                choice["logprobs"].extend(logprobs)
            if raw.get("finish_reason"):
                choice["finish_reason"] = raw["finish_reason"]

    def response(self) -> dict[str, Any]:
        """The assembled response, in the non-streamed shape (with vLLM's token fields)."""
        choices = []
        for index in sorted(self.choices):
            c = self.choices[index]
            text = "".join(c["content"])
            choice: dict[str, Any] = {"index": index, "finish_reason": c["finish_reason"]}
            if self.operation == semconv.GEN_AI_OPERATION_CHAT:
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if c["tool_calls"]:
                    message["tool_calls"] = [
                        {
                            "id": t["id"],
                            "type": "function",
                            "function": {"name": t["name"], "arguments": "".join(t["arguments"])},
                        }
                        for _, t in sorted(c["tool_calls"].items())
                    ]
                choice["message"] = message
            else:
                choice["text"] = text
            if c["token_ids"]:
                choice["token_ids"] = c["token_ids"]
            if c["logprobs"]:
                choice["logprobs"] = {"content": [{"logprob": v} for v in c["logprobs"]]}
            choices.append(choice)
        response: dict[str, Any] = {"id": self.id, "model": self.model, "choices": choices}
        if self.usage is not None:
            response["usage"] = self.usage
        if self.prompt_token_ids is not None:
            response["prompt_token_ids"] = self.prompt_token_ids
        return response
