"""Emitters: record rewards, messages, objects, exceptions, annotations and operations inside a rollout.

Each emitter appends one small record to the active tracer's queue (about a microsecond on the agent's
thread; the store write happens in batches elsewhere). The span is a child of the current
OpenTelemetry span, so it sits in the right place of the rollout's tree.

Outside an active rollout the emitters raise :class:`NoActiveRollout`, so a misplaced reward is never
lost unnoticed; ``agl.set_emitters_outside_rollout("ignore")`` makes them no-ops instead, for code
that also runs outside training.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import math
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, ParamSpec, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from agentlightning import semconv
from agentlightning.errors import AgentLightningError
from agentlightning.tracer._context import ACTIVE, ActiveRollout
from agentlightning.tracer.tracer import SpanRecord, otel_tracer
from agentlightning.types import Attributes, AttributeValue, StatusCode

__all__ = [
    "NoActiveRollout",
    "emit_reward",
    "emit_message",
    "emit_object",
    "emit_exception",
    "emit_annotation",
    "operation",
    "reward_computation",
    "set_emitters_outside_rollout",
    "Thread",
]

P = ParamSpec("P")
R = TypeVar("R")
_ATTRIBUTES: TypeAdapter[Attributes] = TypeAdapter(Attributes)
_outside: Literal["raise", "ignore"] = "raise"


class NoActiveRollout(AgentLightningError):
    """An emitter was called outside any rollout."""


def set_emitters_outside_rollout(behaviour: Literal["raise", "ignore"]) -> None:
    """What emitters do outside a rollout: ``"raise"`` :class:`NoActiveRollout` (the default) or ``"ignore"``."""
    global _outside
    if behaviour not in ("raise", "ignore"):
        raise ValueError(f"behaviour must be 'raise' or 'ignore', not {behaviour!r}")
    _outside = behaviour


def _active(what: str) -> ActiveRollout | None:
    active = ACTIVE.get()
    if active is None and _outside == "raise":
        raise NoActiveRollout(
            f"{what} was called outside a rollout, so there is no attempt to record it in. Call it from an agent "
            "run by agl.Runner / agl.Trainer (or inside Tracer.trace), or use "
            "agl.set_emitters_outside_rollout('ignore') for code that also runs outside training."
        )
    return active


def _emit(
    active: ActiveRollout,
    name: str,
    attributes: dict[str, Any],
    *,
    status: StatusCode = StatusCode.UNSET,
    description: str | None = None,
    events: list[dict[str, Any]] | None = None,
) -> None:
    from opentelemetry import trace

    parent = trace.get_current_span().get_span_context()
    now = time.time()
    active.tracer.record(
        SpanRecord(
            rollout_id=active.rollout_id,
            attempt_id=active.attempt_id,
            name=name,
            attributes=attributes,
            start_time=now,
            end_time=now,
            trace_id=f"{parent.trace_id:032x}" if parent.is_valid else f"{random.getrandbits(128):032x}",
            span_id=f"{random.getrandbits(64):016x}",
            parent_id=f"{parent.span_id:016x}" if parent.is_valid else None,
            status=status,
            description=description,
            events=events or (),
        )
    )


def _checked(attributes: Mapping[str, AttributeValue] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    try:
        return dict(_ATTRIBUTES.validate_python(attributes))
    except ValidationError as exc:
        raise TypeError(
            f"Span attributes must be str, bool, int, float or a list of one of those: {exc.errors()[0]['msg']} "
            f"at {exc.errors()[0]['loc']}"
        ) from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{what} must be a finite number, not {value!r}")
    return float(value)


def emit_reward(
    value: float | Mapping[str, float],
    *,
    primary: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> None:
    """Record a reward in the active rollout.

    ``value`` is one number, or several named ones (``{"accuracy": 1.0, "length": -0.2}``); then
    ``primary`` names the one algorithms optimise (default: the first). A reward emitted during the
    run is an intermediate reward for the LLM call before it; the agent's returned reward is final.
    """
    active = _active("emit_reward")
    if active is None:
        return
    extra = _checked(attributes)
    reward_name: str | None
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("emit_reward got an empty mapping; give at least one named reward")
        named = {str(k): _number(v, f"reward {k!r}") for k, v in value.items()}
        name = primary if primary is not None else next(iter(named))
        if name not in named:
            raise ValueError(f"primary reward {name!r} is not among {sorted(named)}")
        extra.update({semconv.AGL_REWARD_VALUES_PREFIX + k: v for k, v in named.items()})
        reward, reward_name = named[name], name
    else:
        reward, reward_name = _number(value, "reward"), primary
    extra[semconv.AGL_REWARD_VALUE] = reward
    extra[semconv.AGL_REWARD_PRIMARY] = True
    if reward_name is not None:
        extra[semconv.AGL_REWARD_NAME] = reward_name
    _emit(active, semconv.SPAN_REWARD, extra)


def emit_message(message: str, *, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """Record a text message (a log line worth keeping with the rollout)."""
    active = _active("emit_message")
    if active is None:
        return
    extra = _checked(attributes)
    extra[semconv.AGL_MESSAGE_BODY] = str(message)
    _emit(active, semconv.SPAN_MESSAGE, extra)


def emit_object(obj: Any, *, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """Record any JSON-serialisable object (pydantic models and dataclasses too)."""
    active = _active("emit_object")
    if active is None:
        return
    extra = _checked(attributes)
    from pydantic_core import to_json

    try:
        extra[semconv.AGL_OBJECT_JSON] = to_json(obj).decode()
    except Exception as exc:
        raise TypeError(f"emit_object needs a JSON-serialisable object; {type(obj).__name__} is not: {exc}") from None
    extra[semconv.AGL_OBJECT_TYPE] = type(obj).__qualname__
    _emit(active, semconv.SPAN_OBJECT, extra)


def emit_exception(exc: BaseException, *, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """Record an exception: its type, message and stack trace, with an error status."""
    active = _active("emit_exception")
    if active is None:
        return
    extra = _checked(attributes)
    exception = {
        semconv.EXCEPTION_TYPE: type(exc).__qualname__,
        semconv.EXCEPTION_MESSAGE: str(exc),
        semconv.EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exc)),
    }
    extra.update(exception)
    event = {"name": "exception", "timestamp": time.time(), "attributes": exception}
    _emit(
        active,
        semconv.SPAN_EXCEPTION,
        extra,
        status=StatusCode.ERROR,
        description=str(exc) or type(exc).__name__,
        events=[event],
    )


def emit_annotation(annotations: Mapping[str, AttributeValue]) -> None:
    """Record annotations (labels, scores, flags) under ``agentlightning.annotation.<key>``."""
    active = _active("emit_annotation")
    if active is None:
        return
    checked = _checked(annotations)
    _emit(active, semconv.SPAN_ANNOTATION, {semconv.AGL_ANNOTATION_PREFIX + k: v for k, v in checked.items()})


def _json_text(value: Any) -> str:
    from pydantic_core import to_json

    try:
        return to_json(value, fallback=repr).decode()
    except Exception:
        return json.dumps(repr(value))


@contextmanager
def _operation_span(name: str, kind: str | None, inputs: Any | None) -> Iterator[Callable[[Any], None]]:
    if _active(f"operation {name!r}") is None:
        yield lambda _: None
        return
    attributes: dict[str, Any] = {semconv.AGL_OPERATION_NAME: name}
    if kind is not None:
        attributes[semconv.AGL_OPERATION_KIND] = kind
    if inputs is not None:
        attributes[semconv.AGL_OPERATION_INPUT] = _json_text(inputs)
    with otel_tracer().start_as_current_span(f"{semconv.SPAN_OPERATION} {name}", attributes=attributes) as span:
        yield lambda output: span.set_attribute(semconv.AGL_OPERATION_OUTPUT, _json_text(output))


class _Operation:
    """Both a decorator and a context manager; see :func:`operation`."""

    def __init__(self, name: str | None, kind: str | None) -> None:
        self.name = name
        self.kind = kind
        self._context: Any = None
        self._record: Callable[[Any], None] | None = None

    def record_output(self, output: Any) -> None:
        """Record the result of the block (used in ``with agl.operation(...) as op:``)."""
        if self._record is not None:
            self._record(output)

    def __enter__(self) -> _Operation:
        self._context = _operation_span(self.name or "operation", self.kind, None)
        self._record = self._context.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._context.__exit__(*exc_info)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        name = self.name or fn.__qualname__
        kind = self.kind
        signature = inspect.signature(fn)

        def inputs(*args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
                return dict(bound.arguments)
            except TypeError:
                return {"args": args, "kwargs": kwargs}

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _operation_span(name, kind, inputs(*args, **kwargs)) as record:
                    result = await fn(*args, **kwargs)
                    record(result)
                    return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _operation_span(name, kind, inputs(*args, **kwargs)) as record:
                result = fn(*args, **kwargs)
                record(result)
                return result

        return wrapper


@overload
def operation(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def operation(*, name: str | None = None) -> _Operation: ...
def operation(fn: Callable[P, R] | None = None, /, *, name: str | None = None) -> Callable[P, R] | _Operation:
    """Record a step of the agent (its inputs and output) as a span that nests what happens inside.

    As a decorator (``@agl.operation`` or ``@agl.operation(name="plan")``) it records the arguments
    and the return value; as a context manager (``with agl.operation(name="plan") as op:``) call
    ``op.record_output(value)`` to record a result.
    """
    if fn is not None:
        return _Operation(None, None)(fn)
    return _Operation(name, None)


def reward_computation(fn: Callable[P, R] | None = None, /, *, name: str | None = None) -> Any:
    """Mark a reward computation (e.g. an LLM judge): LLM calls inside it never become training transitions.

    Use like :func:`operation`; rewards emitted inside still count.
    """
    if fn is not None:
        return _Operation(None, semconv.OPERATION_KIND_REWARD)(fn)
    return _Operation(name or "reward", semconv.OPERATION_KIND_REWARD)


class Thread(threading.Thread):
    """A ``threading.Thread`` that runs in a copy of its creator's context, so it traces into the same rollout.

    (``asyncio.to_thread`` already copies the context; plain threads and executors do not.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._agl_context = contextvars.copy_context()

    def run(self) -> None:
        self._agl_context.run(super().run)
