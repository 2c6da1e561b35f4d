"""The in-memory store: nothing on disk, gone when the process ends. For tests and quick experiments."""

from __future__ import annotations

from agentlightning.store.sqlite import SqliteStore

__all__ = ["InMemoryStore"]


class InMemoryStore(SqliteStore):
    """A store that lives in memory only.

    It is the SQLite store on an in-memory database, so it behaves exactly like the durable
    default in every respect but persistence.
    """

    def __init__(self, *, sweep_interval: float = 1.0) -> None:
        super().__init__(":memory:", sweep_interval=sweep_interval)
