"""A store on the other end of HTTP: talks to ``agl store serve``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, JsonValue, TypeAdapter

from agentlightning import errors
from agentlightning.server import models as m
from agentlightning.server.app import API_PREFIX
from agentlightning.store.base import EncodedSpan, LightningStore, StoreStatistics, check_dequeue_arguments
from agentlightning.types import (
    AnyResource,
    Attempt,
    AttemptedRollout,
    AttemptStatus,
    Resources,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutRequest,
    RolloutStatus,
    Span,
)

__all__ = ["StoreClient"]

log = logging.getLogger("agentlightning.store")
T = TypeVar("T")

_ROLLOUTS = TypeAdapter(list[Rollout])
_ATTEMPTS = TypeAdapter(list[Attempt])
_SPANS = TypeAdapter(list[Span])
_MAYBE_ATTEMPTED = TypeAdapter(AttemptedRollout | None)
_ATTEMPTED = TypeAdapter(list[AttemptedRollout])
_MAYBE_RESOURCES = TypeAdapter(Resources | None)
_ERRORS: dict[str, type[errors.StoreError]] = {
    cls.__name__: cls
    for cls in (
        errors.RolloutNotFound,
        errors.AttemptNotFound,
        errors.ResourcesNotFound,
        errors.InvalidStatusTransition,
        errors.StoreConflict,
        errors.Unauthorized,
    )
}
# A wait is split into server calls of at most this long, so no proxy or timeout cuts it.
_WAIT_CHUNK = 60.0


def _q(identifier: str) -> str:
    return quote(identifier, safe="")


def _error(status: int, body: bytes) -> errors.StoreError:
    try:
        detail = json.loads(body)["error"]
        kind, message = detail["type"], detail["message"]
    except Exception:
        kind, message = "", f"HTTP {status}: {body[:500].decode(errors='replace')}"
    cls = _ERRORS.get(kind)
    if cls is None:
        return errors.StoreRequestError(message, status)
    error = cls.__new__(cls)
    errors.StoreError.__init__(error, message)
    return error


class StoreClient(LightningStore):
    """A :class:`LightningStore` served by a store server at ``url``.

    Requests that never reached the server (connection refused, server restarting) are retried
    for up to ``retry_seconds``; requests that may have reached it are retried only when repeating
    them is harmless (reads, span batches, heartbeats). Then :class:`StoreUnavailable` is raised.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retry_seconds: float = 30.0,
        max_connections: int = 256,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._max_connections = max_connections
        # aiohttp sessions belong to one event loop; a store may be used from several.
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            for other in [other for other in self._sessions if other.is_closed()]:
                del self._sessions[other]
            session = aiohttp.ClientSession(
                base_url=self.url + API_PREFIX + "/",
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections, force_close=False),
            )
            self._sessions[loop] = session
        return session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> bytes:
        if body is not None:
            content = body.model_dump_json().encode()
        headers = {"content-type": "application/json"} if content is not None else None
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.05
        url = path.lstrip("/")
        while True:
            try:
                async with self._session().request(
                    method,
                    url,
                    data=content,
                    params=params,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
                ) as response:
                    status = response.status
                    payload = await response.read()
            except aiohttp.ClientConnectorError as exc:  # never reached the server: always safe to retry
                failure: Exception = exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not idempotent:
                    raise errors.StoreUnavailable(
                        f"The store server at {self.url} dropped a {method} {path} request ({type(exc).__name__}); "
                        "it may or may not have been carried out."
                    ) from exc
                failure = exc
            else:
                if status < 400:
                    return payload
                if status not in (502, 503, 504):
                    raise _error(status, payload)
                failure = errors.StoreUnavailable(f"HTTP {status}")
            if time.monotonic() + delay > deadline:
                raise errors.StoreUnavailable(
                    f"The store server at {self.url} is unreachable ({type(failure).__name__}: {failure}); "
                    f"gave up after {self._retry_seconds:g} s. Is `agl store serve` running?"
                ) from failure
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _close_loop_session(self) -> None:
        """Close the HTTP session of the running event loop (before that loop ends)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            try:
                await session.close()
            except RuntimeError:  # its loop is gone
                pass

    # --- queue -------------------------------------------------------------------------------
    async def enqueue_many_rollouts(self, requests: Sequence[RolloutRequest]) -> list[Rollout]:
        body = m.EnqueueManyRequest(rollouts=list(requests))
        return _ROLLOUTS.validate_json(await self._request("POST", "/rollouts/batch", body=body))

    async def dequeue_rollout(self, worker_id: str | None = None) -> AttemptedRollout | None:
        raw = await self._request("POST", "/queue/dequeue", body=m.DequeueRequest(worker_id=worker_id))
        return _MAYBE_ATTEMPTED.validate_json(raw)

    async def dequeue_many_rollouts(
        self, limit: int, worker_id: str | None = None, *, wait: float = 0.0
    ) -> list[AttemptedRollout]:
        check_dequeue_arguments(limit, wait)
        deadline = time.monotonic() + wait
        while True:
            remaining = max(0.0, min(_WAIT_CHUNK, deadline - time.monotonic()))
            body = m.DequeueManyRequest(worker_id=worker_id, limit=min(limit, m.MAX_BATCH), wait=remaining)
            raw = await self._request("POST", "/queue/dequeue-many", body=body, timeout=remaining + self._timeout)
            got = _ATTEMPTED.validate_json(raw)
            if got or time.monotonic() >= deadline:
                return got

    async def start_rollout(self, request: RolloutRequest, worker_id: str | None = None) -> AttemptedRollout:
        body = m.StartRolloutRequest(rollout=request, worker_id=worker_id)
        return AttemptedRollout.model_validate_json(await self._request("POST", "/rollouts/start", body=body))

    async def start_attempt(self, rollout_id: str, worker_id: str | None = None) -> AttemptedRollout:
        raw = await self._request(
            "POST", f"/rollouts/{_q(rollout_id)}/attempts", body=m.StartAttemptRequest(worker_id=worker_id)
        )
        return AttemptedRollout.model_validate_json(raw)

    # --- attempts ----------------------------------------------------------------------------
    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        *,
        status: AttemptStatus | None = None,
        worker_id: str | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Attempt:
        fields: dict[str, Any] = {"status": status, "worker_id": worker_id, "metadata": metadata}
        body = m.UpdateAttemptRequest(**{k: v for k, v in fields.items() if v is not None})
        raw = await self._request("PATCH", f"/rollouts/{_q(rollout_id)}/attempts/{_q(attempt_id)}", body=body)
        return Attempt.model_validate_json(raw)

    async def heartbeat(self, rollout_id: str, attempt_id: str) -> Attempt:
        raw = await self._request(
            "POST", f"/rollouts/{_q(rollout_id)}/attempts/{_q(attempt_id)}/heartbeat", idempotent=True
        )
        return Attempt.model_validate_json(raw)

    async def query_attempts(self, rollout_id: str) -> list[Attempt]:
        return _ATTEMPTS.validate_json(
            await self._request("GET", f"/rollouts/{_q(rollout_id)}/attempts", idempotent=True)
        )

    # --- rollouts ----------------------------------------------------------------------------
    async def get_rollout_by_id(self, rollout_id: str) -> Rollout:
        return Rollout.model_validate_json(await self._request("GET", f"/rollouts/{_q(rollout_id)}", idempotent=True))

    async def query_rollouts(
        self,
        *,
        status: Sequence[RolloutStatus] | None = None,
        rollout_ids: Sequence[str] | None = None,
        mode: RolloutMode | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Rollout]:
        body = m.QueryRolloutsRequest(
            status=None if status is None else list(status),
            rollout_ids=None if rollout_ids is None else list(rollout_ids),
            mode=mode,
            limit=limit,
            offset=offset,
            newest_first=newest_first,
        )
        return _ROLLOUTS.validate_json(await self._request("POST", "/rollouts/query", body=body, idempotent=True))

    async def update_rollout(
        self,
        rollout_id: str,
        *,
        status: RolloutStatus | None = None,
        mode: RolloutMode | None = None,
        resources_id: str | None = None,
        config: RolloutConfig | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Rollout:
        fields: dict[str, Any] = {
            "status": status,
            "mode": mode,
            "resources_id": resources_id,
            "config": config,
            "metadata": metadata,
        }
        body = m.UpdateRolloutRequest(**{k: v for k, v in fields.items() if v is not None})
        return Rollout.model_validate_json(await self._request("PATCH", f"/rollouts/{_q(rollout_id)}", body=body))

    async def wait_for_rollouts(self, rollout_ids: Sequence[str], timeout: float | None = None) -> list[Rollout]:
        ids = list(dict.fromkeys(rollout_ids))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _WAIT_CHUNK if deadline is None else max(0.0, min(_WAIT_CHUNK, deadline - time.monotonic()))
            body = m.WaitRequest(rollout_ids=ids, timeout=remaining)
            raw = await self._request(
                "POST", "/rollouts/wait", body=body, idempotent=True, timeout=remaining + self._timeout
            )
            finished = _ROLLOUTS.validate_json(raw)
            if len(finished) == len(ids) or (deadline is not None and time.monotonic() >= deadline):
                return finished

    # --- spans -------------------------------------------------------------------------------
    async def add_many_spans(self, spans: Sequence[Span]) -> list[Span]:
        spans = list(spans)
        raw = await self._request("POST", "/spans", body=m.AddSpansRequest(spans=spans), idempotent=True)
        sequence_ids = m.AddSpansResponse.model_validate_json(raw).sequence_ids
        for span, sequence_id in zip(spans, sequence_ids, strict=True):
            span.sequence_id = sequence_id
        return spans

    async def add_encoded_spans(self, spans: Sequence[EncodedSpan]) -> list[int]:
        # The spans' JSON goes out as it is; the server checks it.
        content = ('{"spans":[' + ",".join(span.json for span in spans) + "]}").encode()
        raw = await self._request("POST", "/spans", content=content, idempotent=True)
        return m.AddSpansResponse.model_validate_json(raw).sequence_ids

    async def query_spans(self, rollout_id: str, attempt_id: str | Literal["latest"] | None = None) -> list[Span]:
        params = None if attempt_id is None else {"attempt_id": attempt_id}
        raw = await self._request("GET", f"/rollouts/{_q(rollout_id)}/spans", params=params, idempotent=True)
        return _SPANS.validate_json(raw)

    # --- resources ---------------------------------------------------------------------------
    async def add_resources(self, resources: Mapping[str, AnyResource], resources_id: str | None = None) -> Resources:
        body = m.AddResourcesRequest(resources=dict(resources), resources_id=resources_id)
        return Resources.model_validate_json(await self._request("POST", "/resources", body=body))

    async def get_resources_by_id(self, resources_id: str) -> Resources:
        return Resources.model_validate_json(
            await self._request("GET", f"/resources/{_q(resources_id)}", idempotent=True)
        )

    async def get_latest_resources(self) -> Resources | None:
        return _MAYBE_RESOURCES.validate_json(await self._request("GET", "/resources/latest", idempotent=True))

    async def statistics(self) -> StoreStatistics:
        return StoreStatistics.model_validate_json(await self._request("GET", "/statistics", idempotent=True))
