"""Streaming (SSE): chunks add up to the non-streamed answer, token ids included, and end with [DONE]."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agentlightning_engine import EngineServer, TransformersEngine
from conftest import chat


def stream(server: EngineServer, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The chunks of a streamed request, and the raw data lines."""
    lines = []
    with httpx.stream("POST", f"{server.url}/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: ")
                lines.append(line.removeprefix("data: "))
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]], lines


def assemble(chunks: list[dict[str, Any]], index: int = 0) -> dict[str, Any]:
    text, ids, logprobs, finish = "", [], [], None
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice["index"] != index:
                continue
            text += choice["delta"].get("content") or ""
            ids += choice.get("token_ids", [])
            logprobs += (choice.get("logprobs") or {}).get("content", [])
            finish = choice.get("finish_reason") or finish
    return {"text": text, "token_ids": ids, "logprobs": logprobs, "finish_reason": finish}


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 24},
        {"max_tokens": 24, "logprobs": True},
        {"max_tokens": 30, "stop": ["xyz", "ing"], "logprobs": True},
    ],
)
def test_streamed_chunks_add_up_to_the_non_streamed_answer(
    server: EngineServer, engine: TransformersEngine, params: dict[str, Any]
) -> None:
    body = chat("Tell me a story.", temperature=0, **params)
    whole = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60).json()
    chunks, _ = stream(server, body)
    assert chunks[0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("prompt_token_ids" not in chunk for chunk in chunks[1:])
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    streamed = assemble(chunks)
    (choice,) = whole["choices"]
    assert streamed["text"] == choice["message"]["content"]
    assert streamed["token_ids"] == choice["token_ids"]
    assert streamed["finish_reason"] == choice["finish_reason"]
    if params.get("logprobs"):
        assert streamed["logprobs"] == choice["logprobs"]["content"]
    # Every chunk's text is what its tokens add: a gateway can check token ids against the text chunk by chunk.
    seen: list[int] = []
    text = ""
    for chunk in chunks:
        for piece in chunk["choices"]:
            seen += piece.get("token_ids", [])
            text += piece["delta"].get("content") or ""
            assert engine.tokenizer.decode(seen, skip_special_tokens=True) == text


def test_streaming_n_choices_and_usage(server: EngineServer) -> None:
    body = chat("Hello!", max_tokens=8, temperature=1.0, seed=11, n=2, stream_options={"include_usage": True})
    chunks, _ = stream(server, body)
    whole = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60).json()
    for index in (0, 1):
        assert assemble(chunks, index)["token_ids"] == whole["choices"][index]["token_ids"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == whole["usage"]


def test_a_bad_streaming_request_gets_a_400_not_a_stream(server: EngineServer) -> None:
    response = httpx.post(f"{server.url}/chat/completions", json=chat("hi", stream=True, temperature=-1))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"
