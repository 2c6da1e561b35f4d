"""The script of the tests' model server: how the agent's model answers, and what the optimizer replies.

The server (``conftest.server``) is ``agentlightning_engine.testing.serve_scripted``: a real ``TransformersEngine``
whose model says what :meth:`Script.reply` says, so the agent and the optimizer talk to it over HTTP exactly as to
any model server. A request is the optimizer's when it holds the first line of the package's critique or edit prompt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agentlightning_apo import load_prompt

#: Words the agent's model repeats when it finds them in its prompt: the agent's reward depends on them.
KEYWORDS = ("alpha", "beta", "gamma", "delta", "epsilon")

CRITIQUE_MARK = load_prompt("critique").template.splitlines()[0]
EDIT_MARK = load_prompt("edit").template.splitlines()[0]


def agent_model(prompt: str) -> str:
    """The agent's model: the keywords present in its prompt (the system message), else "nothing"."""
    found = [word for word in KEYWORDS if word in prompt]
    return " ".join(found) or "nothing"


def template_of(request: str) -> str:
    """The template an optimizer request shows between ``<template>`` markers."""
    return request.split("<template>\n", 1)[1].split("\n</template>", 1)[0]


def appending(*words: str) -> Callable[[str], str]:
    """An edit script: the k-th edit of a given template appends ``words[k]`` to it (then garbage, once they run
    out). Which child gets which word depends on call order; the set a parent's children get does not."""
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def edit(request: str) -> str:
        template = template_of(request)
        with lock:
            k = counts.get(template, 0)
            counts[template] = k + 1
        if k >= len(words):
            return "No more ideas."
        return f"Here it is.\n<prompt>{template} {words[k]}</prompt>"

    return edit


@dataclass
class Script:
    """What the scripted server says: the agent's model, the critique and the edit (each gets the prompt text)."""

    agent: Callable[[str], str] = agent_model
    critique: Callable[[str], str] = lambda request: "Add the missing keyword."
    edit: Callable[[str], str] = field(default_factory=lambda: appending("alpha", "beta"))
    #: Every optimizer request, as ("critique" | "edit", prompt text).
    requests: list[tuple[str, str]] = field(default_factory=list)

    def reply(self, prompt: str) -> str:
        if CRITIQUE_MARK in prompt:
            self.requests.append(("critique", prompt))
            return self.critique(prompt)
        if EDIT_MARK in prompt:
            self.requests.append(("edit", prompt))
            return self.edit(prompt)
        return self.agent(prompt)
