"""The optimizer LLM: any OpenAI-compatible chat endpoint (a hosted API, a vLLM server, or
``agentlightning-engine``'s ``TransformersEngine.serve()``), called with the ``openai`` client.

It is asked two things per edit, each a single user message built from a package prompt file:

- the *critique* (``prompts/critique.md``): the template, its placeholders, the mean minibatch reward, and the
  rendered runs (:mod:`agentlightning_apo.runs`) → what to change; this is ProTeGi's "textual gradient" (Pryzant et
  al. 2023, "Automatic Prompt Optimization with 'Gradient Descent' and Beam Search");
- the *edit* (``prompts/edit.md``): the template and the critique → a new template between ``<prompt>`` tags.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agentlightning import LLM, AgentLightningError, PromptTemplate
from agentlightning_apo.config import APOConfig
from agentlightning_apo.edits import load_prompt, placeholders_text

__all__ = ["Optimizer", "OptimizerError"]


class OptimizerError(AgentLightningError):
    """The optimizer LLM could not be reached or gave no reply; the edit that asked is skipped."""


class Optimizer:
    """Critiques and edits through the optimizer LLM (``llm``, else the ``optimizer_*`` fields of ``config``)."""

    def __init__(self, config: APOConfig, llm: LLM | None = None) -> None:
        from openai import AsyncOpenAI

        self.config = config
        if llm is not None:
            base_url: str | None = llm.base_url
            api_key = llm.api_key
            self.model = llm.model
            self.sampling: dict[str, Any] = dict(llm.sampling_parameters)
        else:
            base_url, api_key = config.optimizer_base_url, config.optimizer_api_key
            self.model = config.optimizer_model
            self.sampling = {}
        self.sampling.setdefault("temperature", config.optimizer_temperature)
        if config.optimizer_max_tokens is not None:
            self.sampling.setdefault("max_tokens", config.optimizer_max_tokens)
        # A local server takes any key; the client refuses to start without one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "unused"
        self.client = AsyncOpenAI(base_url=base_url, api_key=key)
        self.critique_prompt = load_prompt("critique", config.critique_prompt_path)
        self.edit_prompt = load_prompt("edit", config.edit_prompt_path)
        self._slots = asyncio.Semaphore(config.optimizer_concurrency)

    async def critique(self, name: str, template: PromptTemplate, reward: float, runs: str) -> str:
        """What to change in prompt ``name`` (``template``), given its runs on the minibatch and their mean reward."""
        request = self.critique_prompt.format(
            prompt_name=name,
            template=template.template,
            placeholders=placeholders_text(template),
            reward=f"{reward:.3f}",
            runs=runs,
        )
        return await self.ask(request)

    async def edit(self, name: str, template: PromptTemplate, critique: str) -> str:
        """The optimizer's reply proposing a new text for prompt ``name`` (checked by ``edits.check_edit``)."""
        request = self.edit_prompt.format(
            prompt_name=name, template=template.template, placeholders=placeholders_text(template), critique=critique
        )
        return await self.ask(request)

    async def ask(self, request: str) -> str:
        """One chat completion of ``request`` as a user message; its text."""
        async with self._slots:
            try:
                response = await self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": request}], **self.sampling
                )
            except Exception as exc:  # openai.APIError and transport errors: the loop skips this edit
                raise OptimizerError(f"the optimizer call failed: {type(exc).__name__}: {exc}") from exc
        if not response.choices or not response.choices[0].message.content:
            raise OptimizerError("the optimizer returned an empty reply")
        return str(response.choices[0].message.content)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.close()
