"""Resources: the versioned, named things an algorithm improves and runners use (LLMs, prompts, ...)."""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag

from agentlightning.errors import PromptTemplateError

__all__ = ["Resource", "LLM", "PromptTemplate", "GenericResource", "AnyResource", "Resources"]


class Resource(BaseModel):
    """Base class of every resource. ``resource_type`` tells the kinds apart when they cross a process boundary."""

    resource_type: str


class LLM(Resource):
    """An OpenAI-compatible chat model endpoint, and how to sample from it."""

    resource_type: Literal["llm"] = "llm"
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key: str | None = None
    sampling_parameters: dict[str, JsonValue] = Field(
        default_factory=dict, description="Passed with every request, e.g. temperature, top_p, max_tokens."
    )
    gateway: bool = Field(
        default=False,
        description="base_url is an Agent Lightning gateway: runners hand each rollout a URL naming it, "
        "so every call is recorded under that rollout.",
    )

    def for_attempt(self, rollout_id: str, attempt_id: str, agent: str | None = None) -> LLM:
        """This LLM with a gateway URL that attributes calls to the attempt (and agent); unchanged if not a gateway."""
        if not self.gateway:
            return self
        root, version = _split_version(self.base_url)
        path = f"/rollouts/{quote(rollout_id, safe='')}/attempts/{quote(attempt_id, safe='')}"
        if agent is not None:
            path += f"/agents/{quote(agent, safe='')}"
        return self.model_copy(update={"base_url": root + path + version})

    def for_agent(self, agent: str) -> LLM:
        """This LLM with calls attributed to ``agent`` (inside a rollout: appends ``/agents/<name>`` to a gateway URL)."""
        if not self.gateway:
            return self
        root, version = _split_version(self.base_url)
        if "/agents/" in root:
            root = root[: root.index("/agents/")]
        return self.model_copy(update={"base_url": f"{root}/agents/{quote(agent, safe='')}{version}"})


def _split_version(base_url: str) -> tuple[str, str]:
    """``http://h:p/v1`` → (``http://h:p``, ``/v1``): gateway paths go between the two."""
    base = base_url.rstrip("/")
    return (base[: -len("/v1")], "/v1") if base.endswith("/v1") else (base, "")


class PromptTemplate(Resource):
    """A prompt with placeholders, rendered with Python's ``str.format`` syntax or with Jinja."""

    resource_type: Literal["prompt_template"] = "prompt_template"
    template: str
    engine: Literal["f-string", "jinja"] = "f-string"

    def format(self, **values: Any) -> str:
        """Render the template. A placeholder without a value raises :class:`PromptTemplateError`."""
        if self.engine == "f-string":
            try:
                return self.template.format(**values)
            except (KeyError, IndexError) as exc:
                raise PromptTemplateError(
                    f"Prompt template needs a value for {exc.args[0]!r}; got values for {sorted(values)}."
                ) from exc
            except ValueError as exc:
                raise PromptTemplateError(f"Prompt template is not a valid format string: {exc}") from exc
        return _render_jinja(self.template, values)

    @property
    def placeholders(self) -> list[str]:
        """Names the template expects (f-string engine: the replacement fields; jinja: undeclared variables)."""
        if self.engine == "f-string":
            return [field for _, field, _, _ in string.Formatter().parse(self.template) if field]
        from jinja2 import meta
        from jinja2.sandbox import SandboxedEnvironment

        return sorted(meta.find_undeclared_variables(SandboxedEnvironment().parse(self.template)))


def _render_jinja(template: str, values: dict[str, Any]) -> str:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        return env.from_string(template).render(**values)
    except jinja2.UndefinedError as exc:
        raise PromptTemplateError(f"Prompt template needs a value: {exc.message}; got {sorted(values)}.") from exc
    except jinja2.TemplateError as exc:
        raise PromptTemplateError(f"Prompt template is not valid Jinja: {exc}") from exc


class GenericResource(Resource):
    """Any other resource an algorithm publishes; its fields are kept as given."""

    model_config = ConfigDict(extra="allow")


def _resource_tag(value: Any) -> str:
    kind = value.get("resource_type") if isinstance(value, dict) else getattr(value, "resource_type", None)
    return kind if kind in ("llm", "prompt_template") else "generic"


AnyResource = Annotated[
    Annotated[LLM, Tag("llm")]
    | Annotated[PromptTemplate, Tag("prompt_template")]
    | Annotated[GenericResource, Tag("generic")],
    Discriminator(_resource_tag),
]

R = TypeVar("R", bound=Resource)


class Resources(BaseModel):
    """One published version of the named resources; rollouts name the version they must use."""

    resources_id: str
    version: int = Field(description="1 for the first version added to the store, then 2, 3, ...")
    created_time: float
    resources: dict[str, AnyResource]

    def get(self, name: str, kind: type[R]) -> R:
        """The resource called ``name``, checked to be of type ``kind``."""
        try:
            value = self.resources[name]
        except KeyError:
            raise KeyError(
                f"Resources {self.resources_id!r} have no resource {name!r}; have {sorted(self.resources)}."
            ) from None
        if not isinstance(value, kind):
            raise TypeError(f"Resource {name!r} is a {type(value).__name__}, not a {kind.__name__}.")
        return value
