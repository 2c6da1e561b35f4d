"""APO: the search loop. The seed, then one round at a time, top to bottom::

    seed      = the optimized PromptTemplates of the initial resources        candidate c0, one resources version
    score(seed)                                                                mean reward of its validation rollouts
    for round in 1..rounds:
        minibatch = the next train_batch_size training tasks (shuffled, reshuffled every pass)
        runs      = every beam candidate runs the minibatch (its own resources version), spans read back
        for each beam candidate, branch_factor times:                          (concurrently)
            prompt   = the optimized prompt this edit changes (they take turns)
            critique = optimizer(critique.md: the prompt, its runs: messages, tool calls, rewards, failures)
            reply    = optimizer(edit.md: the prompt, the critique)
            child    = check_edit(reply)     no <prompt> block / placeholders changed / duplicate: skipped, logged
        publish each child as a resources version; score them all on the validation tasks
        beam = select(beam + children)      top beam_width by mean score, or the Pareto front (config.selection)
        best = the best-scored candidate so far                                ties go to the older one

The seed is scored like every other candidate on the same validation tasks, and the best-scored candidate is what
the run returns, so a run never ends worse (on those tasks) than its seed. The method is ProTeGi's (Pryzant et al.
2023, "Automatic Prompt Optimization with 'Gradient Descent' and Beam Search"); the Pareto selection is GEPA's
(Agrawal et al. 2025). The agent's LLM and every other resource are published unchanged with every candidate.

A reply that is not a usable prompt, or a failed optimizer call, costs only its edit (logged, and counted in the
round's ``skipped``); a round in which *every* optimizer call failed stops the run with :class:`OptimizerError`,
since the endpoint, not one reply, is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlightning import AgentLightningError, AnyResource, PromptTemplate, Task
from agentlightning.adapter import TraceToMessages
from agentlightning.algorithm import Algorithm, Dataset, TaskOrder, next_tasks
from agentlightning.reward import final_reward
from agentlightning.types import LLM, Rollout, RolloutMode, RolloutStatus, Span
from agentlightning_apo.candidates import (
    Candidate,
    RoundRecord,
    SkippedEdit,
    best_of,
    select_beam,
    select_pareto,
)
from agentlightning_apo.config import APOConfig
from agentlightning_apo.edits import UnusablePrompt, check_edit
from agentlightning_apo.history import round_table, write_history
from agentlightning_apo.optimizer import Optimizer, OptimizerError
from agentlightning_apo.runs import make_run, render_runs

__all__ = ["APO", "APOResult", "NoPromptToOptimize"]

log = logging.getLogger("agentlightning_apo")


class NoPromptToOptimize(AgentLightningError):
    """The resources hold no PromptTemplate that APO was asked to optimize."""


@dataclass
class APOResult:
    """What a run found: the best candidate, every candidate and round, and where the history file is."""

    #: The best-scored candidate (ties: the older one), and the seed it started from.
    best: Candidate
    seed: Candidate
    #: Every optimized prompt of ``best``, as a template ready to publish.
    best_prompts: dict[str, PromptTemplate]
    candidates: list[Candidate]
    rounds: list[RoundRecord]
    history_path: Path | None

    @property
    def best_prompt(self) -> PromptTemplate:
        """The best template, when one prompt was optimized (with several, read :attr:`best_prompts`)."""
        if len(self.best_prompts) != 1:
            raise ValueError(
                f"This run optimized {len(self.best_prompts)} prompts ({', '.join(sorted(self.best_prompts))}); "
                "read result.best_prompts[name]."
            )
        return next(iter(self.best_prompts.values()))

    @property
    def best_score(self) -> float:
        """The best candidate's mean validation reward."""
        return self.best.score

    @property
    def seed_score(self) -> float:
        """The seed's mean validation reward."""
        return self.seed.score

    @property
    def skipped(self) -> list[SkippedEdit]:
        """Every edit that produced no candidate, with its reason."""
        return [s for r in self.rounds for s in r.skipped]


class APO(Algorithm):
    """Automatic prompt optimization: a textual-gradient beam search over named prompt templates (module docstring).

    Run it with a trainer, the prompts to optimize among the initial resources::

        apo = APO(APOConfig(rounds=3, optimizer_model="gpt-4.1-mini"), history_path="runs/apo.json")
        trainer = agl.Trainer(algorithm=apo, initial_resources={"llm": llm, "system_prompt": agl.PromptTemplate(...)})
        result = trainer.fit(agent, train_tasks, val_tasks)
        print(result.best_prompt.template)

    Args:
        config: every setting (:class:`~agentlightning_apo.APOConfig`).
        optimizer_llm: the optimizer LLM as an ``agl.LLM`` (base URL, model, key, sampling parameters); it replaces
            the ``optimizer_*`` endpoint fields of ``config``.
        resources: the resources to start from (default: the trainer's ``initial_resources``).
        history_path: where the history JSON goes (:mod:`agentlightning_apo.history`); ``None`` writes none.
        progress: show a progress bar (tqdm) and the table of each round; otherwise the tables are logged at INFO.
    """

    def __init__(
        self,
        config: APOConfig | None = None,
        *,
        optimizer_llm: LLM | None = None,
        resources: Mapping[str, AnyResource] | None = None,
        history_path: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config or APOConfig()
        self.optimizer_llm = optimizer_llm
        self.resources = dict(resources) if resources is not None else None
        self.history_path = Path(history_path) if history_path is not None else None
        self.progress = progress
        #: Set by each run: distinguishes its resources ids (``apo-<run_id>-c3``) from other runs' in the same store.
        self.run_id = ""

    # --- the loop -------------------------------------------------------------------------------------------

    async def run(self, train_dataset: Dataset | None, val_dataset: Dataset | None) -> APOResult:
        """Search for ``config.rounds`` rounds; returns the best candidate and the history."""
        config = self.config
        if not train_dataset:
            raise ValueError("APO needs a non-empty training set: Trainer.fit(agent, train_dataset, val_dataset).")
        resources = self._initial_resources()
        templates = self._optimized_templates(resources)
        rng = random.Random(config.seed)
        val_tasks = self._validation_tasks(train_dataset, val_dataset, rng)
        train_tasks = _as_tasks(train_dataset)
        order = TaskOrder()
        names = list(templates)  # the edits of a parent take turns over them
        self.run_id = uuid.uuid4().hex[:8]

        seed = Candidate("c0", 0, None, None, {name: t.template for name, t in templates.items()})
        candidates = [seed]
        await self._publish(seed, resources)
        await self._score([seed], val_tasks, 0)
        log.info("APO seed %s: validation score %.3f over %d tasks", seed.id, seed.score, len(val_tasks))
        beam = [seed]
        rounds: list[RoundRecord] = []
        self._save(candidates, rounds)

        optimizer = Optimizer(config, self.optimizer_llm)
        bar = _progress_bar(config.rounds, self.progress)
        bar.set_postfix(_postfix(seed, seed, candidates), refresh=True)
        try:
            for round_number in range(1, config.rounds + 1):
                started = time.perf_counter()
                minibatch = next_tasks(train_tasks, config.train_batch_size, order, rng)
                parents = beam
                runs = await self._minibatch_runs(parents, minibatch, round_number)

                proposals = await asyncio.gather(
                    *(
                        self._propose(parent, names[(k + round_number - 1) % len(names)], runs, optimizer)
                        for parent in parents
                        for k in range(config.branch_factor)
                    )
                )
                _check_optimizer(proposals, round_number, optimizer)
                children, skipped = _new_candidates(proposals, candidates, round_number)
                for skip in skipped:
                    log.warning(
                        "APO round %d: edit of %r from %s skipped: %s",
                        round_number,
                        skip.prompt,
                        skip.parent,
                        skip.reason,
                    )

                for child in children:
                    await self._publish(child, resources)
                await self._score(children, val_tasks, round_number)
                select = select_pareto if config.selection == "pareto" else select_beam
                beam = select([*beam, *children], config.beam_width)
                best = best_of(candidates)

                record = RoundRecord(
                    round=round_number,
                    parents=[c.id for c in parents],
                    minibatch=[task.id for task in minibatch],
                    parent_train_rewards={cid: _mean([self._reward(*run) for run in r]) for cid, r in runs.items()},
                    children=[c.id for c in children],
                    skipped=skipped,
                    beam=[c.id for c in beam],
                    best=best.id,
                    best_score=best.score,
                    seconds=time.perf_counter() - started,
                )
                rounds.append(record)
                self._save(candidates, rounds)
                table = round_table(record, {c.id: c for c in candidates})
                if self.progress:
                    bar.write(table)
                else:
                    log.info("%s", table)
                bar.update(1)
                bar.set_postfix(_postfix(best, seed, candidates), refresh=True)
        finally:
            bar.close()
            await optimizer.close()

        best = best_of(candidates)
        return APOResult(
            best=best,
            seed=seed,
            best_prompts={
                name: template.model_copy(update={"template": best.prompts[name]})
                for name, template in templates.items()
            },
            candidates=candidates,
            rounds=rounds,
            history_path=self.history_path,
        )

    # --- the pieces -----------------------------------------------------------------------------------------

    async def _publish(self, candidate: Candidate, resources: Mapping[str, AnyResource]) -> None:
        """Publish every resource, the candidate's prompt texts in place of the optimized ones, as one version."""
        published = dict(resources)
        for name, text in candidate.prompts.items():
            published[name] = resources[name].model_copy(update={"template": text})
        version = await self.store.add_resources(published, resources_id=f"apo-{self.run_id}-{candidate.id}")
        candidate.resources_id, candidate.version = version.resources_id, version.version

    def _metadata(self, candidate: Candidate, round_number: int) -> dict[str, Any]:
        return {"apo_run": self.run_id, "apo_candidate": candidate.id, "apo_round": round_number}

    async def _score(self, candidates: Sequence[Candidate], tasks: Sequence[Task], round_number: int) -> None:
        """Run every candidate on the validation tasks (all at once); set its per-task scores."""
        if not candidates:
            return
        enqueued = [
            await self.enqueue(
                tasks,
                RolloutMode.VAL,
                resources_id=c.resources_id,
                group_size=self.config.val_rollouts_per_task,
                metadata=self._metadata(c, round_number),
            )
            for c in candidates
        ]
        finished = await self.wait([r for rollouts in enqueued for r in rollouts])
        spans = await asyncio.gather(*(self.spans(r) for r in finished))
        rewards: dict[tuple[str, str], list[float]] = {}
        failed: dict[str, int] = {}
        for rollout, rollout_spans in zip(finished, spans, strict=True):
            cid, task_id = str(rollout.metadata["apo_candidate"]), str(rollout.metadata["task_id"])
            rewards.setdefault((cid, task_id), []).append(self._reward(rollout, rollout_spans))
            failed[cid] = failed.get(cid, 0) + (rollout.status != RolloutStatus.SUCCEEDED)
        for c in candidates:
            c.task_scores = {task.id: _mean(rewards.get((c.id, task.id), [])) for task in tasks}
            c.rollouts = len(tasks) * self.config.val_rollouts_per_task
            c.failed_rollouts = failed.get(c.id, 0)

    async def _minibatch_runs(
        self, beam: Sequence[Candidate], minibatch: Sequence[Task], round_number: int
    ) -> dict[str, list[tuple[Rollout, list[Span]]]]:
        """Every beam candidate's rollouts of the minibatch (all enqueued at once), with their spans."""
        enqueued = {
            c.id: await self.enqueue(
                minibatch, RolloutMode.TRAIN, resources_id=c.resources_id, metadata=self._metadata(c, round_number)
            )
            for c in beam
        }
        finished = await self.wait([r for rollouts in enqueued.values() for r in rollouts])
        spans = await asyncio.gather(*(self.spans(r) for r in finished))
        runs: dict[str, list[tuple[Rollout, list[Span]]]] = {c.id: [] for c in beam}
        for rollout, rollout_spans in zip(finished, spans, strict=True):
            runs[str(rollout.metadata["apo_candidate"])].append((rollout, rollout_spans))
        return runs

    async def _propose(
        self,
        parent: Candidate,
        name: str,
        runs: Mapping[str, Sequence[tuple[Rollout, list[Span]]]],
        optimizer: Optimizer,
    ) -> _Proposal:
        """One edit of prompt ``name`` of ``parent``: a critique of its runs, then an edit following it."""
        config = self.config
        adapter = TraceToMessages(config.prompt_agents.get(name))
        parent_runs = [
            make_run(rollout, spans, adapter.adapt(spans), config.missing_reward) for rollout, spans in runs[parent.id]
        ]
        template = self._template(name, parent)
        proposal = _Proposal(parent, name)
        try:
            rendered = render_runs(parent_runs, config.critique_max_chars, config.message_max_chars)
            reward = _mean([r.reward for r in parent_runs])
            proposal.critique = await optimizer.critique(name, template, reward, rendered)
            reply = await optimizer.edit(name, template, proposal.critique)
            proposal.text = check_edit(template, reply).template
        except UnusablePrompt as exc:
            proposal.reason = str(exc)
        except OptimizerError as exc:
            proposal.reason, proposal.optimizer_failed = str(exc), True
        return proposal

    def _template(self, name: str, candidate: Candidate) -> PromptTemplate:
        original = self._initial_resources()[name]
        assert isinstance(original, PromptTemplate)
        return original.model_copy(update={"template": candidate.prompts[name]})

    def _reward(self, rollout: Rollout, spans: Sequence[Span]) -> float:
        reward = final_reward(spans)
        if reward is None or rollout.status != RolloutStatus.SUCCEEDED:
            return self.config.missing_reward
        return reward

    def _initial_resources(self) -> dict[str, AnyResource]:
        if self.resources is not None:
            return self.resources
        return dict(self.context.initial_resources or {})

    def _optimized_templates(self, resources: Mapping[str, AnyResource]) -> dict[str, PromptTemplate]:
        """The prompts to optimize, by name, checked to be PromptTemplates of the resources."""
        templates = sorted(name for name, value in resources.items() if isinstance(value, PromptTemplate))
        wanted = templates if self.config.prompts is None else sorted(set(self.config.prompts))
        missing = [name for name in wanted if name not in templates]
        if missing or not wanted:
            raise NoPromptToOptimize(
                f"APO optimizes PromptTemplate resources, but {', '.join(map(repr, missing)) or 'none'} "
                f"{'is' if len(missing) == 1 else 'are'} not among the resources' PromptTemplates ({templates or 'none'}). "
                "Pass them in Trainer(initial_resources={name: agl.PromptTemplate(template=...)}) or APO(resources=...), "
                "and name them in APOConfig.prompts (or leave it None for all)."
            )
        return {name: value for name in wanted if isinstance(value := resources[name], PromptTemplate)}

    def _validation_tasks(self, train: Dataset, val: Dataset | None, rng: random.Random) -> list[Task]:
        """The validation tasks every candidate runs: ``val_batch_size`` of them (drawn once), else all."""
        if not val:
            log.warning("APO got no validation set; it scores candidates on the training set instead.")
        tasks = _as_tasks(val or train)
        size = self.config.val_batch_size
        return tasks if size is None or size >= len(tasks) else rng.sample(tasks, size)

    def _save(self, candidates: Sequence[Candidate], rounds: Sequence[RoundRecord]) -> None:
        if self.history_path is not None:
            write_history(self.history_path, self.run_id, self.config, candidates, rounds, best_of(candidates))


@dataclass
class _Proposal:
    """One edit of prompt ``prompt`` of ``parent``: the critique, then the new text, or why there is none."""

    parent: Candidate
    prompt: str
    critique: str | None = None
    text: str | None = None
    reason: str = ""
    #: The optimizer call itself failed (rather than its reply being unusable).
    optimizer_failed: bool = False


def _new_candidates(
    proposals: Sequence[_Proposal], candidates: list[Candidate], round_number: int
) -> tuple[list[Candidate], list[SkippedEdit]]:
    """The round's new candidates (appended to ``candidates``), and the edits that made none: an unusable reply, a
    failed optimizer call, or a text some candidate already has (it is scored already)."""
    known = {_key(c.prompts): c for c in candidates}
    children: list[Candidate] = []
    skipped: list[SkippedEdit] = []
    for proposal in proposals:
        parent, name = proposal.parent, proposal.prompt
        if proposal.text is None:
            skipped.append(SkippedEdit(parent.id, name, proposal.reason))
            continue
        prompts = {**parent.prompts, name: proposal.text}
        same = known.get(_key(prompts))
        if same is not None:
            skipped.append(SkippedEdit(parent.id, name, f"the edit is the same as candidate {same.id}"))
            continue
        child = Candidate(f"c{len(candidates)}", round_number, parent.id, name, prompts, proposal.critique)
        candidates.append(child)
        children.append(child)
        known[_key(prompts)] = child
    return children, skipped


def _check_optimizer(proposals: Sequence[_Proposal], round_number: int, optimizer: Optimizer) -> None:
    """Stop when every optimizer call of a round failed: the endpoint is wrong, not one reply."""
    if proposals and all(p.optimizer_failed for p in proposals):
        raise OptimizerError(
            f"Every optimizer call of round {round_number} failed ({proposals[0].reason}). Check the optimizer "
            f"endpoint: base URL {str(optimizer.client.base_url)!r}, model {optimizer.model!r} "
            "(APOConfig.optimizer_base_url / optimizer_model / optimizer_api_key, or APO(optimizer_llm=...))."
        )


def _as_tasks(dataset: Dataset) -> list[Task]:
    """The dataset as tasks with ids (a plain item's id is its index), so a subset keeps the ids of the whole."""
    return [item if isinstance(item, Task) else Task(id=str(i), input=item) for i, item in enumerate(dataset)]


def _key(prompts: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(prompts.items()))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc="APO", unit="round", disable=not enabled, dynamic_ncols=True)


def _postfix(best: Candidate, seed: Candidate, candidates: Sequence[Candidate]) -> dict[str, str]:
    return {"best": f"{best.score:.3f} ({best.id})", "seed": f"{seed.score:.3f}", "candidates": str(len(candidates))}
