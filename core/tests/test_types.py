"""The data model: what users build by hand and what crosses process boundaries."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import agentlightning as agl


def test_prompt_templates_render_with_f_string_and_jinja() -> None:
    f_string = agl.PromptTemplate(template="Solve {question} in {steps} steps.")
    assert f_string.format(question="2 + 2", steps=3) == "Solve 2 + 2 in 3 steps."
    assert f_string.placeholders == ["question", "steps"]
    jinja = agl.PromptTemplate(template="{% for t in tools %}- {{ t }}\n{% endfor %}Q: {{ question }}", engine="jinja")
    assert jinja.format(tools=["calc", "search"], question="why?") == "- calc\n- search\nQ: why?"
    assert jinja.placeholders == ["question", "tools"]


def test_prompt_templates_say_which_value_is_missing() -> None:
    with pytest.raises(agl.PromptTemplateError, match="'steps'"):
        agl.PromptTemplate(template="{question} in {steps}").format(question="q")
    with pytest.raises(agl.PromptTemplateError, match="question"):
        agl.PromptTemplate(template="Q: {{ question }}", engine="jinja").format()
    with pytest.raises(agl.PromptTemplateError, match="not valid Jinja"):
        agl.PromptTemplate(template="{% for %}", engine="jinja").format()


def test_jinja_templates_cannot_reach_python_internals() -> None:
    template = agl.PromptTemplate(template="{{ x.__class__.__mro__[1].__subclasses__() }}", engine="jinja")
    with pytest.raises(Exception, match=r"unsafe|not safely|access"):
        template.format(x="a")


def test_resources_round_trip_through_json_keeping_their_kinds() -> None:
    resources = agl.Resources(
        resources_id="rs-1",
        version=1,
        created_time=0.0,
        resources={
            "llm": agl.LLM(base_url="http://127.0.0.1:1/v1", model="m", api_key="k"),
            "prompt": agl.PromptTemplate(template="{x}", engine="f-string"),
            "ckpt": agl.GenericResource(resource_type="checkpoint", path="/w", step=7),  # type: ignore[call-arg]
        },
    )
    back = agl.Resources.model_validate_json(resources.model_dump_json())
    assert back == resources
    assert isinstance(back.resources["llm"], agl.LLM) and isinstance(back.resources["prompt"], agl.PromptTemplate)
    assert back.resources["ckpt"].model_dump() == {"resource_type": "checkpoint", "path": "/w", "step": 7}
    with pytest.raises(TypeError, match="is a LLM, not a PromptTemplate"):
        back.get("llm", agl.PromptTemplate)
    with pytest.raises(KeyError, match="have no resource 'missing'"):
        back.get("missing", agl.LLM)


def test_rollout_config_retries_only_failures() -> None:
    with pytest.raises(ValidationError, match="only failed, timeout and unresponsive"):
        agl.RolloutConfig(retry_on=[agl.AttemptStatus.SUCCEEDED])
    with pytest.raises(ValidationError):
        agl.RolloutConfig(max_attempts=0)
    with pytest.raises(ValidationError):
        agl.RolloutConfig(timeout_seconds=float("nan"))


@pytest.mark.parametrize(
    "changes",
    [
        {"trace_id": "xyz"},
        {"span_id": "0" * 15},
        {"attributes": {"mixed": [1, "a"]}},
        {"attributes": {"nested": {"a": 1}}},
        {"rollout_id": ""},
    ],
)
def test_spans_reject_what_opentelemetry_would_not_carry(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "rollout_id": "ro-1",
        "attempt_id": "at-1",
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "name": "s",
        "start_time": 1.0,
    }
    agl.Span.model_validate(fields)
    with pytest.raises(ValidationError):
        agl.Span.model_validate({**fields, **changes})


def test_span_attributes_keep_their_types_through_json() -> None:
    span = agl.Span(
        rollout_id="ro-1",
        attempt_id="at-1",
        trace_id="a" * 32,
        span_id="b" * 16,
        name="s",
        start_time=1.0,
        attributes={"i": 1, "f": 1.0, "b": True, "s": "x", "ids": [1, 2], "lp": [-0.5, -1.0], "nan": float("nan")},
    )
    back = agl.Span.model_validate_json(span.model_dump_json())
    assert {k: type(v) for k, v in back.attributes.items()} == {k: type(v) for k, v in span.attributes.items()}
    assert back.attributes["nan"] != back.attributes["nan"]  # NaN survives as NaN
