"""Installed integrations: the packages that record an agent framework's runs as spans.

Each integration package (``agentlightning-langchain``, …) announces itself in the entry-point group
``agentlightning.integrations``: the entry point's name is the framework (``langchain``) and its value
a module with ``instrument()`` and ``uninstrument()``, which hook the framework globally and undo it::

    [project.entry-points."agentlightning.integrations"]
    langchain = "agentlightning_langchain"

``agl.installed_integrations()`` lists what is installed; ``agl.instrument()`` turns on every installed
integration (or the named ones), ``agl.uninstrument()`` turns them off again.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from agentlightning.errors import AgentLightningError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Integration",
    "IntegrationError",
    "installed_integrations",
    "instrument",
    "uninstrument",
]

ENTRY_POINT_GROUP = "agentlightning.integrations"


class IntegrationError(AgentLightningError):
    """An integration is not installed, or its package does not provide ``instrument`` / ``uninstrument``."""


@dataclass(frozen=True)
class Integration:
    """One installed integration package."""

    #: The framework it integrates, e.g. ``"langchain"``.
    name: str
    #: The distribution that provides it, e.g. ``"agentlightning-langchain"``.
    distribution: str | None
    version: str | None
    #: ``module`` (or ``module:attribute``) with ``instrument()`` / ``uninstrument()``.
    target: str

    def load(self) -> ModuleType:
        """Import the integration's module and check that it can instrument."""
        try:
            module = importlib.import_module(self.target.partition(":")[0])
        except ImportError as exc:
            raise IntegrationError(
                f"The {self.name!r} integration ({self.distribution}) could not be imported: {exc}. "
                f"Reinstall it, or the framework it needs."
            ) from exc
        for function in ("instrument", "uninstrument"):
            if not callable(getattr(module, function, None)):
                raise IntegrationError(
                    f"The {self.name!r} integration's module {module.__name__} has no {function}() function."
                )
        return module


def _from_entry_point(entry_point: EntryPoint) -> Integration:
    dist = entry_point.dist
    return Integration(
        name=entry_point.name,
        distribution=dist.name if dist is not None else None,
        version=dist.version if dist is not None else None,
        target=entry_point.value,
    )


def installed_integrations() -> list[Integration]:
    """The installed integrations, sorted by name."""
    found = {ep.name: _from_entry_point(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return [found[name] for name in sorted(found)]


def _select(names: Sequence[str]) -> list[Integration]:
    installed = installed_integrations()
    if not names:
        return installed
    by_name = {integration.name: integration for integration in installed}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        have = ", ".join(by_name) or "none"
        raise IntegrationError(
            f"No integration named {', '.join(map(repr, unknown))} is installed (installed: {have}). "
            f"Install it with e.g. `pip install agentlightning-{unknown[0]}`."
        )
    return [by_name[name] for name in names]


def instrument(*names: str) -> list[str]:
    """Hook the named frameworks (default: every installed integration) so their runs are recorded as spans
    of the active rollout. Returns the names instrumented."""
    selected = _select(names)
    for integration in selected:
        integration.load().instrument()
    return [integration.name for integration in selected]


def uninstrument(*names: str) -> list[str]:
    """Undo :func:`instrument` for the named frameworks (default: every installed integration)."""
    selected = _select(names)
    for integration in selected:
        integration.load().uninstrument()
    return [integration.name for integration in selected]
