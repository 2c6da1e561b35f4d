"""Stores: where rollouts, attempts, spans and resources live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentlightning.store.base import EncodedSpan, LightningStore, StoreStatistics
from agentlightning.store.memory import InMemoryStore
from agentlightning.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from agentlightning.store.client import StoreClient

__all__ = [
    "EncodedSpan",
    "LightningStore",
    "StoreStatistics",
    "InMemoryStore",
    "SqliteStore",
    "StoreClient",
    "open_store",
]


def __getattr__(name: str) -> object:
    # The HTTP client pulls in aiohttp; load it only when asked for.
    if name == "StoreClient":
        from agentlightning.store.client import StoreClient

        return StoreClient
    raise AttributeError(name)


def open_store(url: str, *, token: str | None = None, read_only: bool = False) -> LightningStore:
    """Open a store from a URL.

    - ``sqlite:///runs.db`` (relative path) or ``sqlite:////abs/path/runs.db``: a :class:`SqliteStore`
    - ``memory://``: an :class:`InMemoryStore`
    - ``http://host:port`` or ``https://...``: a :class:`StoreClient` of a store server (``token`` if it needs one)
    """
    from agentlightning.errors import StoreError

    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path.startswith("/") or path == "/":
            raise StoreError(
                f"SQLite store URL {url!r} names no file; write sqlite:///runs.db or sqlite:////abs/runs.db."
            )
        return SqliteStore(path[1:], read_only=read_only)
    if url in ("memory://", "memory:"):
        return InMemoryStore()
    if url.startswith(("http://", "https://")):
        from agentlightning.store.client import StoreClient

        return StoreClient(url, token=token)
    raise StoreError(f"Unknown store URL {url!r}; use sqlite:///path.db, memory:// or http://host:port.")
