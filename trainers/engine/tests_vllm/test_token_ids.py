"""The vLLM server VLLMEngine starts returns what the gateway records: prompt and completion token ids, logprobs."""

from __future__ import annotations

import json
from typing import Any

import httpx
from agentlightning_engine import VLLMEngine
from conftest import MODEL_NAME, TinyModels, chat, greedy_reference
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase


def test_a_chat_completion_has_the_prompt_and_completion_token_ids_and_their_logprobs(
    engine: VLLMEngine, tokenizer: PreTrainedTokenizerBase, tiny_models: TinyModels
) -> None:
    response = httpx.post(f"{engine.url}/chat/completions", json=chat("What is 2 + 2?"), timeout=60)
    assert response.status_code == 200, response.text
    completion = response.json()
    choice = completion["choices"][0]
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    assert completion["prompt_token_ids"] == tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    ids = choice["token_ids"]
    assert len(ids) == completion["usage"]["completion_tokens"] == 8
    assert tokenizer.decode(ids, skip_special_tokens=True) == choice["message"]["content"]
    logprobs = [entry["logprob"] for entry in choice["logprobs"]["content"]]
    assert len(logprobs) == len(ids)

    # the served weights are the folder's: greedy tokens and logprobs are transformers' own
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype="float32")
    expected_ids, expected_logprobs = greedy_reference(model, completion["prompt_token_ids"], len(ids))
    assert ids == expected_ids
    assert max(abs(a - b) for a, b in zip(logprobs, expected_logprobs, strict=True)) < 1e-3


def test_a_streamed_completion_carries_the_same_token_ids_and_logprobs_in_its_chunks(
    engine: VLLMEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    whole = httpx.post(f"{engine.url}/chat/completions", json=chat("Tell me a story."), timeout=60).json()
    chunks: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{engine.url}/chat/completions", json=chat("Tell me a story.", stream=True), timeout=60
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    assert [c["prompt_token_ids"] for c in chunks if c.get("prompt_token_ids")] == [whole["prompt_token_ids"]]
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    ids = [token for choice in choices for token in choice.get("token_ids") or []]
    text = "".join(choice["delta"].get("content") or "" for choice in choices)
    logprobs = [entry["logprob"] for choice in choices for entry in (choice.get("logprobs") or {}).get("content", [])]
    assert ids == whole["choices"][0]["token_ids"]
    assert text == whole["choices"][0]["message"]["content"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert logprobs == [entry["logprob"] for entry in whole["choices"][0]["logprobs"]["content"]]


def test_the_server_answers_to_the_served_model_name(engine: VLLMEngine) -> None:
    models = httpx.get(f"{engine.url}/models", timeout=10).json()
    assert [m["id"] for m in models["data"] if m["parent"] is None] == [MODEL_NAME] == [engine.model_name]
    assert engine.url.startswith("http://127.0.0.1:") and engine.url.endswith("/v1")
