"""An edit reply becomes a candidate only when it is a usable template in place of the one it edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentlightning_apo import UnusablePrompt, check_edit, extract_prompt, load_prompt, placeholders_text

import agentlightning as agl

TEMPLATE = agl.PromptTemplate(template="Answer {question} using {context}.")


def test_the_last_prompt_block_is_the_new_template() -> None:
    reply = (
        "Draft: <prompt>old idea</prompt>\nFinal:\n<PROMPT>\n  Answer {question} from {context}, briefly.\n</PROMPT>"
    )
    assert extract_prompt(reply) == "Answer {question} from {context}, briefly."
    edited = check_edit(TEMPLATE, reply)
    assert edited.template == "Answer {question} from {context}, briefly." and edited.engine == "f-string"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Looks good to me.", "no <prompt>…</prompt> block"),
        ("<prompt>  </prompt>", "block is empty"),
        ("<prompt>Answer {question}.</prompt>", "drops placeholder\\(s\\) context"),
        ("<prompt>Answer {question} using {context} for {user}.</prompt>", "adds placeholder\\(s\\) user"),
        ("<prompt>Answer {question} using {context.</prompt>", "not a valid f-string template"),
        ("<prompt>Answer {question} using {context!z}.</prompt>", "does not render"),
    ],
)
def test_unusable_replies_say_why(reply: str, reason: str) -> None:
    with pytest.raises(UnusablePrompt, match=reason):
        check_edit(TEMPLATE, reply)


def test_jinja_templates_keep_their_engine_and_variables() -> None:
    template = agl.PromptTemplate(template="Answer {{ question }}.", engine="jinja")
    assert placeholders_text(template) == "{{ question }}"
    assert check_edit(template, "<prompt>Please answer {{ question }} {# why #}.</prompt>").engine == "jinja"
    with pytest.raises(UnusablePrompt, match="drops placeholder"):
        check_edit(template, "<prompt>Please answer.</prompt>")
    with pytest.raises(UnusablePrompt, match="not a valid jinja template"):
        check_edit(template, "<prompt>Answer {{ question }.</prompt>")


def test_a_template_without_placeholders_takes_none() -> None:
    template = agl.PromptTemplate(template="Be helpful.")
    assert placeholders_text(template) == "(none)"
    assert check_edit(template, "<prompt>Be helpful and brief.</prompt>").template == "Be helpful and brief."
    with pytest.raises(UnusablePrompt, match="adds placeholder"):
        check_edit(template, "<prompt>Be helpful to {user}.</prompt>")


def test_the_package_prompts_take_what_the_optimizer_fills_in(tmp_path: Path) -> None:
    assert set(load_prompt("critique").placeholders) == {"prompt_name", "template", "placeholders", "reward", "runs"}
    assert set(load_prompt("edit").placeholders) == {"prompt_name", "template", "placeholders", "critique"}
    mine = tmp_path / "edit.md"
    mine.write_text("Rewrite {template} per {critique}; keep {{braces}}.")
    assert load_prompt("edit", mine).format(template="T", critique="C") == "Rewrite T per C; keep {braces}."
