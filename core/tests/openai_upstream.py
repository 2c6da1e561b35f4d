"""A small OpenAI-compatible upstream that speaks vLLM's token-id protocol, for the gateway's own tests.

The real upstreams (``agentlightning-engine``'s TransformersEngine, vLLM) live in other packages; the
cross-package tests in ``tests/`` use them. This one makes the gateway's behaviour easy to pin down:
its "tokenizer" is UTF-8 (token id = byte), its answer is deterministic, and some model names make it
misbehave on purpose.

- model ``echo``: answers ``"echo: <last user message>"``; with tools offered and a message containing
  "weather", answers with a tool call to the first tool instead.
- model ``fail``: answers HTTP 500 with an OpenAI-shaped error.
- ``return_token_ids`` adds ``prompt_token_ids`` and ``choices[].token_ids``; ``logprobs`` adds
  per-token logprobs (-0.5 each). ``stream: true`` sends one chunk per word, then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def tokens(text: str) -> list[int]:
    """The upstream's tokenizer: one token per UTF-8 byte."""
    return list(text.encode())


def detokenize(ids: list[int]) -> str:
    """Inverse of :func:`tokens`."""
    return bytes(ids).decode()


def _answer(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
    messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
    last = next((m.get("content") or "" for m in reversed(messages) if m.get("role") in ("user", "tool")), "")
    tools = body.get("tools")
    if tools and "weather" in str(last):
        name = tools[0]["function"]["name"]
        return "", [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}]
    return f"echo: {last}", None


async def chat(request: Request) -> Response:
    body = json.loads(await request.body())
    if body.get("model") == "fail":
        return JSONResponse({"error": {"message": "the model crashed", "type": "server_error"}}, status_code=500)
    text, tool_calls = _answer(body)
    prompt_ids = tokens(json.dumps(body.get("messages") or body.get("prompt")))
    # A model writes its tool call as tokens too; the server parses them into tool_calls.
    completion_ids = tokens(text or f"<tool_call>{json.dumps(tool_calls[0]['function'])}</tool_call>")
    chat_api = request.url.path.endswith("chat/completions")
    if body.get("stream"):
        return StreamingResponse(_stream(body, text, tool_calls, prompt_ids, chat_api), media_type="text/event-stream")
    choice: dict[str, Any] = {"index": 0, "finish_reason": "tool_calls" if tool_calls else "stop"}
    if chat_api:
        choice["message"] = {"role": "assistant", "content": text or None, "tool_calls": tool_calls}
    else:
        choice["text"] = text
    if body.get("return_token_ids"):
        choice["token_ids"] = completion_ids
    if body.get("logprobs"):
        choice["logprobs"] = {
            "content": [{"token": chr(t), "logprob": -0.5, "bytes": [t], "top_logprobs": []} for t in completion_ids]
        }
    response: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion" if chat_api else "text_completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(completion_ids),
            "total_tokens": len(prompt_ids) + len(completion_ids),
        },
    }
    if body.get("return_token_ids"):
        response["prompt_token_ids"] = prompt_ids
    return JSONResponse(response)


async def _stream(
    body: dict[str, Any], text: str, tool_calls: Any, prompt_ids: list[int], chat_api: bool
) -> AsyncIterator[bytes]:
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1][:-1]
    for i, piece in enumerate(pieces):
        choice: dict[str, Any] = {"index": 0, "finish_reason": None}
        if chat_api:
            choice["delta"] = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        else:
            choice["text"] = piece
        if body.get("return_token_ids"):
            choice["token_ids"] = tokens(piece)
        if body.get("logprobs"):
            choice["logprobs"] = {
                "content": [{"token": chr(t), "logprob": -0.5, "bytes": [t], "top_logprobs": []} for t in tokens(piece)]
            }
        chunk: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model"),
            "choices": [choice],
        }
        if i == 0 and body.get("return_token_ids"):
            chunk["prompt_token_ids"] = prompt_ids
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    if tool_calls:
        delta = {"tool_calls": [{"index": 0, **tool_calls[0]}]}
        chunk = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    final = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool_calls else "stop"}],
    }
    yield f"data: {json.dumps(final)}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "test"}]})


def create_upstream() -> Starlette:
    """The upstream's ASGI app; serve it with ``agl.server.serve.HttpServer``."""
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )
