"""POST /v1/chat/completions over HTTP: token ids, logprobs, sampling parameters, finish reasons, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import torch
from agentlightning_engine import EngineServer, TransformersEngine
from conftest import chat


@pytest.fixture(scope="module")
def client(server: EngineServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60)


def complete(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_models_lists_the_served_model(client: httpx.Client, engine: TransformersEngine) -> None:
    models = client.get("/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == engine.max_model_len


def test_token_ids_decode_to_the_text_and_the_prompt_is_the_chat_template(
    client: httpx.Client, engine: TransformersEngine
) -> None:
    body = chat("What is 2 + 3?", max_tokens=20, temperature=0)
    result = complete(client, body)
    (choice,) = result["choices"]
    assert result["object"] == "chat.completion" and result["model"] == "tiny"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == engine.tokenizer.decode(choice["token_ids"], skip_special_tokens=True)
    expected_prompt = engine.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
    assert engine.tokenizer.decode(result["prompt_token_ids"]) == expected_prompt
    assert result["usage"] == {
        "prompt_tokens": len(result["prompt_token_ids"]),
        "completion_tokens": len(choice["token_ids"]),
        "total_tokens": len(result["prompt_token_ids"]) + len(choice["token_ids"]),
    }
    assert "logprobs" not in choice or choice["logprobs"] is None


def test_logprobs_are_aligned_with_token_ids_and_are_the_models_own(
    client: httpx.Client, engine: TransformersEngine
) -> None:
    result = complete(client, chat("Say something.", max_tokens=12, temperature=0, logprobs=True, top_logprobs=3))
    (choice,) = result["choices"]
    content = choice["logprobs"]["content"]
    assert len(content) == len(choice["token_ids"]) == 12
    for entry, token_id in zip(content, choice["token_ids"], strict=True):
        assert entry["logprob"] <= 0
        assert bytes(entry["bytes"]) == engine.tokenizer.decode([token_id]).encode()
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy takes the most likely token
        assert entry["top_logprobs"][0]["logprob"] == pytest.approx(entry["logprob"])
    # The logprobs are what the model gives the tokens when it reads the whole sequence at once (what a trainer
    # recomputes), up to float noise.
    ids = torch.tensor([result["prompt_token_ids"] + choice["token_ids"]])
    with torch.no_grad():
        logits = engine.model(input_ids=ids).logits[0, len(result["prompt_token_ids"]) - 1 : -1]
    expected = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(choice["token_ids"])[:, None])[:, 0]
    assert [e["logprob"] for e in content] == pytest.approx(expected.tolist(), abs=1e-4)


def test_greedy_is_deterministic(client: httpx.Client) -> None:
    body = chat("Tell me a story.", max_tokens=24, temperature=0)
    first, second = complete(client, body), complete(client, body)
    assert first["choices"][0]["token_ids"] == second["choices"][0]["token_ids"]
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


def test_a_seed_makes_sampling_reproducible(client: httpx.Client) -> None:
    def sample(seed: int) -> list[int]:
        body = chat("Tell me a story.", max_tokens=24, temperature=1.0, top_p=0.95, seed=seed)
        token_ids: list[int] = complete(client, body)["choices"][0]["token_ids"]
        return token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    greedy = complete(client, chat("Tell me a story.", max_tokens=24, temperature=0))["choices"][0]["token_ids"]
    assert sample(7) != greedy


def test_n_gives_n_choices(client: httpx.Client, engine: TransformersEngine) -> None:
    result = complete(client, chat("Hello!", max_tokens=10, temperature=1.0, n=2, seed=3))
    assert [c["index"] for c in result["choices"]] == [0, 1]
    first, second = (c["token_ids"] for c in result["choices"])
    assert first != second
    for choice in result["choices"]:
        assert choice["message"]["content"] == engine.tokenizer.decode(choice["token_ids"], skip_special_tokens=True)
    assert result["usage"]["completion_tokens"] == len(first) + len(second)
    # Choice 0 of a seeded request is the same as the only choice of the same request with n=1.
    single = complete(client, chat("Hello!", max_tokens=10, temperature=1.0, seed=3))
    assert single["choices"][0]["token_ids"] == first


def test_max_tokens_ends_with_length(client: httpx.Client) -> None:
    for limit in ("max_tokens", "max_completion_tokens"):
        (choice,) = complete(client, chat("Hi", temperature=0, **{limit: 5}))["choices"]
        assert len(choice["token_ids"]) == 5
        assert choice["finish_reason"] == "length"


def test_a_stop_string_cuts_the_text_before_it(client: httpx.Client, engine: TransformersEngine) -> None:
    body = chat("Tell me a story.", max_tokens=30, temperature=0, logprobs=True)
    full = complete(client, body)["choices"][0]
    text = full["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), text
    (choice,) = complete(client, {**body, "stop": [stop, "never appears"]})["choices"]
    assert choice["finish_reason"] == "stop"
    assert stop not in choice["message"]["content"]
    assert text.startswith(choice["message"]["content"])
    assert choice["message"]["content"] == engine.tokenizer.decode(choice["token_ids"], skip_special_tokens=True)
    assert full["token_ids"][: len(choice["token_ids"])] == choice["token_ids"]
    # Only the tokens that carry the stop string (and what precedes it inside them) are cut.
    one_more = engine.tokenizer.decode(full["token_ids"][: len(choice["token_ids"]) + 1], skip_special_tokens=True)
    assert len(one_more) > text.index(stop)
    assert len(choice["logprobs"]["content"]) == len(choice["token_ids"])


def test_a_stop_string_that_is_not_generated_changes_nothing(client: httpx.Client) -> None:
    body = chat("Tell me a story.", max_tokens=16, temperature=0)
    assert complete(client, {**body, "stop": "\u2603\u2603"})["choices"] == complete(client, body)["choices"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"model": "tiny"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages"),
        (chat("hi", temperature=5), "temperature"),
        (chat("hi", top_p=0), "top_p"),
        (chat("hi", n=0), "n"),
        (chat("hi", max_tokens=0), "max_tokens"),
        (chat("hi", max_tokens=10**6), "max_tokens"),
        (chat("hi", stop=[""]), "stop"),
        (chat("hi", top_logprobs=50, logprobs=True), "top_logprobs"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
        ),
    ],
)
def test_bad_requests_get_an_openai_shaped_400(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_too_long_a_request_says_context_length_exceeded(client: httpx.Client, engine: TransformersEngine) -> None:
    error = client.post("/chat/completions", json=chat("hi", max_tokens=engine.max_model_len)).json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert str(engine.max_model_len) in error["message"]


def test_a_body_that_is_not_json_and_an_unknown_path_get_openai_shaped_errors(client: httpx.Client) -> None:
    response = client.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = client.post("/completions-nope", json={})
    assert response.status_code == 404
    assert "error" in response.json()


def test_multimodal_text_parts_and_tool_messages_are_templated(
    client: httpx.Client, engine: TransformersEngine
) -> None:
    body = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "max_tokens": 4,
        "temperature": 0,
    }
    result = complete(client, body)
    prompt = engine.tokenizer.decode(result["prompt_token_ids"])
    assert "Be brief." in prompt and "sunny" in prompt


def test_an_api_key_is_required_when_set(engine: TransformersEngine) -> None:
    with EngineServer(engine, port=0, api_key="s3cret") as server:
        assert httpx.get(f"{server.url}/models").status_code == 401
        assert httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{server.url}/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serving_beyond_loopback_needs_an_api_key(engine: TransformersEngine) -> None:
    from agentlightning_engine import EngineError

    with pytest.raises(EngineError, match="API key"):
        EngineServer(engine, host="0.0.0.0", port=0)
