"""An agent's OpenAI client -> the core's gateway -> vLLM: each call is recorded with token ids that decode to
exactly the text the agent received."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from agentlightning_engine import VLLMEngine
from transformers import PreTrainedTokenizerBase

import agentlightning as agl
from agentlightning import semconv


@agl.rollout
def agent(task: dict[str, Any], llm: agl.LLM) -> float:
    client = openai.OpenAI(base_url=llm.base_url, api_key="unused")
    messages: Any = [{"role": "user", "content": task["question"]}]
    if task["stream"]:
        stream = client.chat.completions.create(
            model=llm.model, messages=messages, max_tokens=16, temperature=0, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    else:
        completion = client.chat.completions.create(model=llm.model, messages=messages, max_tokens=16, temperature=0)
        text = completion.choices[0].message.content or ""
    agl.emit_object({"text": text})
    return 1.0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_calls_through_the_gateway_are_recorded_with_token_ids_that_decode_to_the_text_received(
    engine: VLLMEngine, tokenizer: PreTrainedTokenizerBase, stream: bool
) -> None:
    store = agl.InMemoryStore()
    with agl.Gateway(engine.url, store) as gateway:
        trainer = agl.Trainer(store=store, initial_resources={"llm": gateway.llm(engine.model_name)})
        result = trainer.dev(agent, [{"question": "What is 2 + 2?", "stream": stream}])
    assert result.succeeded == 1
    (rollout, _), *_ = result.rollouts
    spans = asyncio.run(store.query_spans(rollout.rollout_id))
    calls = [s for s in spans if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == "chat"]
    texts = [
        json.loads(str(s.attributes[semconv.AGL_OBJECT_JSON]))["text"] for s in spans if s.name == semconv.SPAN_OBJECT
    ]
    assert len(calls) == len(texts) == 1
    ids = calls[0].attributes[semconv.AGL_COMPLETION_TOKEN_IDS]
    assert isinstance(ids, list) and len(ids) == 16
    assert tokenizer.decode([int(i) for i in ids], skip_special_tokens=True) == texts[0]
    assert calls[0].attributes[semconv.AGL_PROMPT_TOKEN_IDS]
    logprobs = calls[0].attributes[semconv.AGL_COMPLETION_LOGPROBS]
    assert isinstance(logprobs, list) and len(logprobs) == len(ids)
    asyncio.run(store.close())
