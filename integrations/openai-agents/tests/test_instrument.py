"""instrument() replaces the SDK's trace processors (its exporter to OpenAI included) and warns about settings that
hide what training needs; uninstrument() puts back what was there. The model helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from agentlightning_openai_agents import (
    LightningTracingProcessor,
    TracingHidesWhatTrainingNeeds,
    chat_completions_model,
    instrument,
    instrumented_processor,
    model_settings,
    uninstrument,
)
from agents import set_tracing_disabled
from agents.tracing import get_trace_provider
from agents.tracing.processors import BatchTraceProcessor

import agentlightning as agl


def processors() -> list[object]:
    return list(get_trace_provider()._multi_processor._processors)  # type: ignore[attr-defined]


@pytest.fixture
def uninstrumented() -> Iterator[None]:
    uninstrument()
    yield
    uninstrument()


@pytest.mark.usefixtures("uninstrumented")
def test_instrument_replaces_the_exporter_to_openai_and_uninstrument_puts_it_back() -> None:
    before = processors()
    assert any(isinstance(p, BatchTraceProcessor) for p in before)  # the SDK's default: exports to OpenAI

    processor = instrument()
    assert isinstance(processor, LightningTracingProcessor)
    assert processors() == [processor] and instrumented_processor() is processor
    assert instrument() is processor  # once

    uninstrument()
    assert processors() == before and instrumented_processor() is None
    uninstrument()  # not instrumented: nothing to undo
    assert processors() == before


@pytest.mark.usefixtures("uninstrumented")
def test_instrument_warns_when_tracing_is_disabled_or_excludes_sensitive_data(monkeypatch: pytest.MonkeyPatch) -> None:
    set_tracing_disabled(True)
    try:
        with pytest.warns(TracingHidesWhatTrainingNeeds, match="tracing is disabled"):
            instrument()
    finally:
        set_tracing_disabled(False)
    uninstrument()
    monkeypatch.setenv("OPENAI_AGENTS_TRACE_INCLUDE_SENSITIVE_DATA", "false")
    with pytest.warns(TracingHidesWhatTrainingNeeds, match="no messages or tool arguments"):
        instrument()


def test_model_settings_carry_the_llms_sampling_parameters() -> None:
    llm = agl.LLM(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        sampling_parameters={"temperature": 0.5, "max_tokens": 7, "seed": 3},
    )
    settings = model_settings(llm, top_p=0.9)
    assert (settings.temperature, settings.max_tokens, settings.top_p) == (0.5, 7, 0.9)
    assert settings.extra_args == {"seed": 3}  # no field of its own: sent as is


def test_chat_completions_model_calls_the_llms_url_with_one_shared_client_per_loop() -> None:
    first = agl.LLM(base_url="http://127.0.0.1:1/rollouts/a/attempts/b/v1", model="m", api_key="k")
    second = first.model_copy(update={"base_url": "http://127.0.0.1:1/rollouts/c/attempts/d/v1"})

    async def build() -> tuple[object, object]:
        return chat_completions_model(first), chat_completions_model(second)

    one, two = asyncio.run(build())
    clients = [m._client for m in (one, two)]  # type: ignore[attr-defined]
    assert [str(c.base_url) for c in clients] == [first.base_url + "/", second.base_url + "/"]
    assert clients[0].api_key == "k" and one.model == "m"  # type: ignore[attr-defined]
    assert clients[0]._client is clients[1]._client  # one HTTP connection pool
