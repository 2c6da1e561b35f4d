"""Agents: what a runner runs on each rollout. Write a function with ``@agl.rollout`` or subclass ``agl.LitAgent``."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from agentlightning.types import LLM, AttemptedRollout, PromptTemplate, Resource, Resources

__all__ = ["LitAgent", "FunctionAgent", "rollout", "AgentResult"]

AgentResult = float | None


class LitAgent:
    """Base class of agents. Override :meth:`rollout` (sync or async).

    It gets the task (the rollout's input), the resources version the rollout names, and the rollout
    itself (ids, mode, metadata), and returns the final reward as a number, or ``None`` when the
    agent records its rewards itself with ``agl.emit_reward``.
    """

    #: Shown in spans and logs.
    name: str = "agent"

    def rollout(
        self, task: Any, resources: Resources, rollout: AttemptedRollout
    ) -> AgentResult | Awaitable[AgentResult]:
        """Run the agent once."""
        raise NotImplementedError(f"{type(self).__name__} must implement rollout(task, resources, rollout)")

    @property
    def is_async(self) -> bool:
        """Whether :meth:`rollout` is a coroutine function (then a runner runs many at once)."""
        return inspect.iscoroutinefunction(self.rollout)

    @property
    def uses_resources(self) -> bool:
        """Whether :meth:`rollout` looks at its resources; if not, runners save fetching them for each rollout."""
        return True


def _pick(resources: Resources, kind: type[Resource], wanted: str) -> Resource:
    matching = {name: value for name, value in resources.resources.items() if isinstance(value, kind)}
    if wanted in matching:
        return matching[wanted]
    if len(matching) == 1:
        return next(iter(matching.values()))
    if not matching:
        raise LookupError(
            f"The agent takes `{wanted}`, but resources {resources.resources_id!r} have no {kind.__name__} "
            f"(they have {sorted(resources.resources)}); publish one with initial_resources={{'{wanted}': ...}}."
        )
    raise LookupError(
        f"The agent takes `{wanted}`, but resources {resources.resources_id!r} have several {kind.__name__}s "
        f"({sorted(matching)}); name the one it should get {wanted!r}, or take `resources` instead."
    )


_INJECTED: dict[str, Callable[[Resources, AttemptedRollout], Any]] = {
    "llm": lambda resources, _: _pick(resources, LLM, "llm"),
    "prompt_template": lambda resources, _: _pick(resources, PromptTemplate, "prompt_template"),
    "resources": lambda resources, _: resources,
    "rollout": lambda _, rollout: rollout,
}


class FunctionAgent(LitAgent):
    """An agent made from a function by :func:`rollout`."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "agent")
        parameters = list(inspect.signature(fn).parameters.values())
        if not parameters or parameters[0].kind == inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"@agl.rollout function {self.name}() must take the task as its first argument.")
        unknown = [p.name for p in parameters[1:] if p.name not in _INJECTED]
        if unknown:
            raise TypeError(
                f"@agl.rollout function {self.name}() has parameters {unknown} that the runner cannot fill; "
                f"after the task it may take any of {sorted(_INJECTED)}."
            )
        self._injected = [p.name for p in parameters[1:]]
        self._async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__

    @property
    def is_async(self) -> bool:
        return self._async

    @property
    def uses_resources(self) -> bool:
        return any(name in ("llm", "prompt_template", "resources") for name in self._injected)

    def rollout(
        self, task: Any, resources: Resources, rollout: AttemptedRollout
    ) -> AgentResult | Awaitable[AgentResult]:
        kwargs = {name: _INJECTED[name](resources, rollout) for name in self._injected}
        return self.fn(task, **kwargs)  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, e.g. in a unit test of the agent."""
        return self.fn(*args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # At module level the decorated name holds this agent, not the function, so pickle (which finds
        # functions by name) cannot pickle the function: send a reference to the agent instead, which the
        # receiving process (a runner process of Trainer(processes=True)) imports.
        module, qualname = getattr(self.fn, "__module__", None), getattr(self.fn, "__qualname__", "")
        try:
            module_level = module is not None and _import_agent(module, qualname) is self
        except (ImportError, AttributeError):
            module_level = False
        if module_level:
            return _import_agent, (module, qualname)
        return super().__reduce_ex__(protocol)


def _import_agent(module: str, qualname: str) -> Any:
    """The object named ``qualname`` in ``module`` (imported if need be)."""
    import importlib

    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def rollout(fn: Callable[..., Any]) -> FunctionAgent:
    """Make an agent of a function taking the task and any of ``llm``, ``prompt_template``, ``resources``, ``rollout``.

    ``llm`` gets the resources' ``agl.LLM`` (the one named ``llm`` if there are several),
    ``prompt_template`` their ``agl.PromptTemplate``, ``resources`` the whole set, ``rollout`` the
    attempted rollout. The function may be sync or async and returns a float reward or ``None``.
    """
    return FunctionAgent(fn)
