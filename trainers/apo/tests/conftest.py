"""One scripted OpenAI-compatible server for the whole session, playing both the agent's model and the optimizer
(:mod:`scripted`); each test sets its :class:`~scripted.Script` through the ``script`` fixture."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers loads: the tokenizer comes from a local file

from collections.abc import Iterator
from typing import Any

import pytest
from agentlightning_engine.testing import serve_scripted
from scripted import Script

from agentlightning.testing import no_outbound_connections as no_outbound_connections  # autouse
from agentlightning.testing import store as store  # the fixture

_current = Script()


@pytest.fixture(scope="session")
def server() -> Iterator[Any]:
    """The scripted server (``server.url`` is its OpenAI base URL; the model is ``scripted``)."""
    with serve_scripted(lambda prompt: _current.reply(prompt)) as served:
        yield served


@pytest.fixture
def script(server: Any) -> Iterator[Script]:
    """A fresh script for the test, which it may change before the run."""
    global _current
    _current = Script()
    yield _current
    _current = Script()
