"""instrument() / uninstrument() hook CrewAI's event bus and put it back, and keep CrewAI's telemetry on this
machine; the entry point; the CrewAI LLM for an agl.LLM, which needs no litellm."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest
from agentlightning_crewai import (
    LOCAL_ONLY_ENVIRONMENT,
    LightningListener,
    crewai_llm,
    instrument,
    instrumented_listener,
    uninstrument,
)
from conftest import HOME
from crewai import Agent, Crew, Task
from crewai.events.event_bus import CrewAIEventsBus
from crewai.llms.providers.openai.completion import OpenAICompletion
from crewai.telemetry import Telemetry

import agentlightning as agl


def hooks() -> list[Any]:
    return [CrewAIEventsBus.__dict__["emit"], CrewAIEventsBus.__dict__["aemit"]]


@pytest.fixture
def uninstrumented(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in LOCAL_ONLY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    uninstrument()
    yield
    uninstrument()


@pytest.mark.usefixtures("uninstrumented")
def test_instrument_hooks_the_event_bus_once_and_uninstrument_puts_back_what_was_there() -> None:
    before = hooks()
    listener = instrument()
    assert isinstance(listener, LightningListener) and instrumented_listener() is listener
    hooked = hooks()
    assert all(a is not b for a, b in zip(before, hooked, strict=True))
    assert instrument() is listener  # once
    assert hooks() == hooked
    # CrewAI's telemetry, trace uploads and first-run consent prompt are off while instrumented.
    assert all(os.environ[name] == value for name, value in LOCAL_ONLY_ENVIRONMENT.items())
    assert "OTEL_SDK_DISABLED" not in os.environ  # it would switch off Agent Lightning's tracer too
    assert Telemetry().ready is False

    uninstrument()
    assert hooks() == before
    assert instrumented_listener() is None
    assert not any(name in os.environ for name in LOCAL_ONLY_ENVIRONMENT)
    uninstrument()  # not instrumented: nothing to undo


@pytest.mark.usefixtures("uninstrumented")
def test_the_core_finds_the_integration_by_its_entry_point() -> None:
    (found,) = [i for i in agl.installed_integrations() if i.name == "crewai"]
    assert found.distribution == "agentlightning-crewai"
    agl.instrument("crewai")
    assert isinstance(instrumented_listener(), LightningListener)
    agl.uninstrument("crewai")
    assert instrumented_listener() is None


def test_crewai_llm_is_crewais_native_openai_client_on_the_rollouts_url() -> None:
    llm = agl.LLM(base_url="http://127.0.0.1:9/v1", model="smol", sampling_parameters={"temperature": 0.5, "top_k": 20})
    built = crewai_llm(llm, max_tokens=64)
    assert isinstance(built, OpenAICompletion)  # no litellm: CrewAI's own OpenAI provider
    assert importlib.util.find_spec("litellm") is None
    assert built.model == "smol" and built.base_url == "http://127.0.0.1:9/v1"
    assert built.temperature == 0.5 and built.max_tokens == 64


def test_outside_a_rollout_nothing_is_recorded_and_the_crew_runs(
    listener: LightningListener, gateway: agl.Gateway, store: agl.SqliteStore
) -> None:
    llm = crewai_llm(gateway.llm("scripted"))
    writer = Agent(role="writer", goal="Write the answer.", backstory="You write.", llm=llm)
    crew = Crew(agents=[writer], tasks=[Task(description="what is 2 plus 3", expected_output="it", agent=writer)])
    assert "The answer is 5." in crew.kickoff().raw
    assert listener.errors == 0 and instrumented_listener() is listener
    assert asyncio.run(store.query_rollouts()) == []  # nothing recorded, nowhere to record it

    # CrewAI kept its files in the test's home, not the user's.
    from crewai.utilities.paths import db_storage_path

    assert db_storage_path().startswith(HOME)
