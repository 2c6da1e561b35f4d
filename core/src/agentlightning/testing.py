"""Pytest fixtures for testing agents, integrations and trainers against a real store.

Import them into a ``conftest.py`` (``from agentlightning.testing import store as store``), or load them from the
root one with ``pytest_plugins = ["agentlightning.testing"]``:

- ``store``: a :class:`~agentlightning.SqliteStore` in the test's temporary folder, closed after the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentlightning.store.sqlite import SqliteStore

__all__ = ["store"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A SQLite store in the test's temporary folder (``runs.db``), closed after the test."""
    opened = SqliteStore(tmp_path / "runs.db")
    yield opened
    asyncio.run(opened.close())
