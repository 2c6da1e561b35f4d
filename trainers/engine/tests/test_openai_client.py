"""The official openai client, sync and async, plain and streaming, against the engine's server."""

from __future__ import annotations

import openai
import pytest
from agentlightning_engine import EngineServer, TransformersEngine
from conftest import chat

MESSAGES = chat("What is the capital of France?")["messages"]


def test_sync_client(server: EngineServer, engine: TransformersEngine) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]
    completion = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 10
    # vLLM's token fields come through as extra fields.
    token_ids = choice.model_extra["token_ids"]  # type: ignore[index]
    assert choice.message.content == engine.tokenizer.decode(token_ids, skip_special_tokens=True)
    assert completion.model_extra["prompt_token_ids"]  # type: ignore[index]

    chunks = list(
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_async_client_streams_with_logprobs(server: EngineServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.url, api_key="unused")
    completion = await client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None and len(logprobs.content) == 8
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 2 for entry in logprobs.content)

    stream = await client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, stream=True
    )
    text, streamed_logprobs = "", []
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
                streamed_logprobs += [entry.logprob for entry in chunk.choices[0].logprobs.content]
    assert text == completion.choices[0].message.content
    assert streamed_logprobs == [entry.logprob for entry in logprobs.content]
    await client.close()


def test_client_errors_are_openai_errors(server: EngineServer) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=3)
    assert raised.value.param == "temperature"
