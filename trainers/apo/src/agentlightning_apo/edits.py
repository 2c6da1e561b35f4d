"""The optimizer's side of a round: the critique and edit prompts (package files the user can replace), and the
check that turns an edit reply into a usable prompt template or says why it is not one.

An edit reply is usable when it holds a ``<prompt>…</prompt>`` block (the last one counts) whose text, rendered by
the template's own engine, is a valid template with exactly the placeholders of the template it edits: the agent
fills in those and no others. Anything else raises :class:`UnusablePrompt` with the reason, and the loop skips it.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from agentlightning import AgentLightningError, PromptTemplate, PromptTemplateError

__all__ = ["UnusablePrompt", "load_prompt", "extract_prompt", "check_edit", "placeholders_text"]

_PROMPT_BLOCK = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL | re.IGNORECASE)


class UnusablePrompt(AgentLightningError):
    """An optimizer reply that is not a usable prompt; the message says why. The loop logs it and skips the edit."""


def load_prompt(name: str, override: str | Path | None = None) -> PromptTemplate:
    """The optimizer prompt ``name`` (``"critique"`` or ``"edit"``): the file ``override`` if given, else the
    package's ``prompts/<name>.md``. Both are f-string templates (literal braces are written ``{{`` and ``}}``)."""
    if override is not None:
        text = Path(override).read_text(encoding="utf-8")
    else:
        text = resources.files("agentlightning_apo").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")
    return PromptTemplate(template=text)


def placeholders_text(template: PromptTemplate) -> str:
    """The template's placeholders as they are written in it (``{question}``, or ``{{ question }}`` for Jinja)."""
    names = sorted(set(template.placeholders))
    if not names:
        return "(none)"
    if template.engine == "jinja":
        return ", ".join(f"{{{{ {name} }}}}" for name in names)
    return ", ".join(f"{{{name}}}" for name in names)


def extract_prompt(reply: str) -> str:
    """The text of the last ``<prompt>…</prompt>`` block of ``reply``, stripped; raises :class:`UnusablePrompt`."""
    blocks = _PROMPT_BLOCK.findall(reply)
    if not blocks:
        raise UnusablePrompt(f"the reply has no <prompt>…</prompt> block (it begins {_begin(reply)})")
    text = str(blocks[-1]).strip()
    if not text:
        raise UnusablePrompt("the reply's <prompt> block is empty")
    return text


def check_edit(original: PromptTemplate, reply: str) -> PromptTemplate:
    """The template an edit reply proposes for ``original``, checked to be usable in its place.

    Raises:
        UnusablePrompt: no ``<prompt>`` block, an empty one, a template its engine cannot parse, or placeholders
            that differ from the original's (a missing one loses what the agent fills in; a new one is a value the
            agent never supplies).
    """
    edited = PromptTemplate(template=extract_prompt(reply), engine=original.engine)
    try:
        found = set(edited.placeholders)
    except (ValueError, PromptTemplateError) as exc:
        raise UnusablePrompt(f"the new template is not a valid {original.engine} template: {exc}") from None
    except Exception as exc:  # jinja2.TemplateSyntaxError, without importing jinja2 for f-string users
        raise UnusablePrompt(f"the new template is not a valid {original.engine} template: {exc}") from None
    expected = set(original.placeholders)
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"drops placeholder(s) {', '.join(missing)}")
        if extra:
            parts.append(f"adds placeholder(s) {', '.join(extra)} the agent does not fill in")
        raise UnusablePrompt(f"the new template {' and '.join(parts)}")
    if _renders(original):
        try:
            edited.format(**dict.fromkeys(expected, "x"))
        except PromptTemplateError as exc:
            raise UnusablePrompt(f"the new template does not render: {exc}") from None
    return edited


def _renders(template: PromptTemplate) -> bool:
    """Whether ``template`` renders with a string for every placeholder (one using ``{x.attr}`` may not)."""
    try:
        template.format(**dict.fromkeys(template.placeholders, "x"))
    except PromptTemplateError:
        return False
    return True


def _begin(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")
