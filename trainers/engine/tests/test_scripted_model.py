"""Behaviour that needs a model to say something specific (a tool call, an EOS): a scripted stand-in model.

The stand-in speaks the interface the engine uses (``forward(input_ids, attention_mask, position_ids, cache,
use_cache, logits_to_keep)`` returning ``.logits``) and answers every prompt with the same token ids, then
EOS. It keeps no KV cache, so it also exercises the engine's fallback for caches it cannot merge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import torch
from agentlightning_engine import TransformersEngine
from agentlightning_engine.testing import serve_scripted
from conftest import chat

TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]
SAID = 'Let me check.<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'


class ScriptedModel(torch.nn.Module):
    """Says ``script`` after a prompt of ``prompt_length`` tokens, then ``eos`` forever."""

    def __init__(self, script: list[int], prompt_length: int, eos: int, vocab_size: int) -> None:
        super().__init__()
        self.script, self.prompt_length, self.eos, self.vocab_size = script, prompt_length, eos, vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=512, name_or_path="scripted")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
    ) -> SimpleNamespace:
        logits = torch.full((input_ids.shape[0], 1, self.vocab_size), -30.0)
        for row, position in enumerate(position_ids[:, -1].tolist()):
            step = position + 1 - self.prompt_length
            logits[row, 0, self.script[step] if step < len(self.script) else self.eos] = 0.0
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def scripted(engine: TransformersEngine) -> Iterator[TransformersEngine]:
    tokenizer = engine.tokenizer
    prompt = engine.render_prompt(engine._prepare(chat("Weather in Paris?", tools=TOOLS)).request)
    script = tokenizer(SAID, add_special_tokens=False)["input_ids"]
    model = ScriptedModel(script, len(prompt), tokenizer.eos_token_id, len(tokenizer))
    with TransformersEngine(model, tokenizer=tokenizer) as scripted:
        yield scripted


async def test_tool_calls_are_parsed_when_the_request_has_tools(scripted: TransformersEngine) -> None:
    result = await scripted.chat_completion(chat("Weather in Paris?", tools=TOOLS, temperature=0))
    (choice,) = result.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    # The token ids are still every generated token: the full text, tool call included, then EOS (as in vLLM).
    assert scripted.tokenizer.decode(choice.token_ids, skip_special_tokens=True) == SAID
    assert choice.token_ids[-1] == scripted.tokenizer.eos_token_id
    assert scripted.tokenizer.eos_token_id not in choice.token_ids[:-1]


async def test_without_tools_the_text_stays_content_and_eos_ends_with_stop(scripted: TransformersEngine) -> None:
    # Same prompt length is needed by the script, so pass the tools but switch parsing off.
    result = await scripted.chat_completion(chat("Weather in Paris?", tools=TOOLS, tool_choice="none"))
    (choice,) = result.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content == SAID and choice.message.tool_calls is None


async def test_streamed_tool_calls_arrive_in_the_last_chunk(scripted: TransformersEngine) -> None:
    chunks = [c async for c in await scripted.stream_chat_completion(chat("Weather in Paris?", tools=TOOLS))]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Let me check."
    last = chunks[-1].choices[0]
    assert last.finish_reason == "tool_calls"
    assert last.delta.tool_calls is not None and last.delta.tool_calls[0].function.name == "weather"
    assert last.delta.tool_calls[0].index == 0
    ids = [i for c in chunks for choice in c.choices for i in choice.token_ids]
    assert scripted.tokenizer.decode(ids, skip_special_tokens=True) == SAID


async def test_concurrent_requests_without_a_mergeable_cache_run_in_turn(scripted: TransformersEngine) -> None:
    import asyncio

    results = await asyncio.gather(
        *(scripted.chat_completion(chat("Weather in Paris?", tools=TOOLS)) for _ in range(5))
    )
    assert all(r.choices[0].message.content == "Let me check." for r in results)
    assert scripted.statistics.joined == 0


def test_serve_scripted_asks_the_script_once_per_request() -> None:
    # A script that counts its calls answers a repeated prompt differently: no prompt reuse may skip a call.
    replies = iter(["First.", "Second."])
    with serve_scripted(lambda prompt: next(replies)) as server, httpx.Client(base_url=server.url) as client:
        said = [
            client.post("/chat/completions", json={**chat("Hi?"), "model": "scripted"}).json()["choices"][0]
            for _ in range(2)
        ]
    assert [choice["message"]["content"] for choice in said] == ["First.", "Second."]
