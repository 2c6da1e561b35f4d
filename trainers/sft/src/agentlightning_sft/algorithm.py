"""SFT: iterated rejection-sampling fine-tuning (RAFT / ReST / expert iteration). One iteration, top to bottom::

    tasks      = the next tasks_per_iteration training tasks (shuffled, reshuffled every pass)
    rollouts   = enqueue rollouts_per_task rollouts of each task (one group id per task), naming the served LLM
    finished   = wait for all of them
    candidates = read_candidates(...)                  each rollout's reward; the selected agents' calls as
                                                       token ids (TraceToTrajectory) and chat (TraceToMessages)
    selected   = select_rollouts(...) or config.select reward threshold, then best-of-n per task
    export     = write_jsonl(selected examples)        export_dir/iteration-<k>.jsonl (OpenAI chat format)
    fine-tune  = fine_tune(token examples)             loss on the generated tokens only, inside engine.paused()
    validate   before the first iteration and after the last

The engine is a :class:`~agentlightning_engine.TransformersEngine` and this process trains the very module it
serves: the fine-tuning runs inside ``engine.paused()`` and the next request is answered by the new weights,
so publishing the new model copies nothing. With LoRA, the adapter is injected into that module in place and
serves every call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import agentlightning as agl
from agentlightning import AgentLightningError
from agentlightning.adapter import ChatExample
from agentlightning.algorithm import Algorithm, Dataset, TaskOrder, next_tasks, reward_summary
from agentlightning.reward import final_reward
from agentlightning.types import RolloutMode, RolloutStatus
from agentlightning_sft.config import SFTConfig
from agentlightning_sft.export import to_hf_dataset, write_jsonl
from agentlightning_sft.metrics import IterationRecord, MetricsLog, ValidationRecord
from agentlightning_sft.selection import read_candidates, select_rollouts
from agentlightning_sft.training import FineTuneMetrics, fine_tune, make_optimizer, token_examples

__all__ = ["NothingToTrain", "SFT", "SFTResult"]

log = logging.getLogger("agentlightning_sft")


class NothingToTrain(AgentLightningError):
    """An iteration's rollouts show the run cannot learn anything, for a reason the user must fix."""


@dataclass
class SFTResult:
    """What a run did: every iteration, every validation, and every example it trained on."""

    history: list[IterationRecord]
    validations: list[ValidationRecord]
    #: The chat examples of every selected rollout, all iterations together (export with :meth:`to_jsonl`).
    examples: list[ChatExample] = field(default_factory=list)
    metrics_dir: Path | None = None
    export_dir: Path | None = None

    @property
    def initial_validation(self) -> ValidationRecord | None:
        """The validation of the untrained model (iteration 0), if there was a validation set."""
        return next((v for v in self.validations if v.iteration == 0), None)

    @property
    def final_validation(self) -> ValidationRecord | None:
        """The last validation."""
        return self.validations[-1] if self.validations else None

    def report(self) -> str:
        """Before / after: the validation of the untrained model next to the last one."""
        before, after = self.initial_validation, self.final_validation
        if before is None or after is None:
            return "No validation set: nothing to compare."
        return (
            f"validation success {before.success_rate:.1%} -> {after.success_rate:.1%}, "
            f"mean reward {before.reward_mean:.3f} -> {after.reward_mean:.3f} "
            f"(after {after.iteration} iterations, {after.rollouts} tasks)"
        )

    def to_jsonl(self, path: str | Path) -> Path:
        """Every selected example as OpenAI chat fine-tuning JSONL."""
        return write_jsonl(self.examples, path)

    def to_hf_dataset(self) -> Any:
        """Every selected example as a ``datasets.Dataset`` (``messages``, and ``tools`` when offered)."""
        return to_hf_dataset(self.examples)


class SFT(Algorithm):
    """Iterated rejection-sampling fine-tuning of the LLM inside an agent (module docstring).

    Run it with a trainer: ``agl.Trainer(algorithm=SFT(engine, SFTConfig(...))).fit(agent, train, val)``.
    The agent receives the model as the ``agl.LLM`` resource ``resource_name``: a gateway URL (started here, in
    front of ``engine``) that records every call with its token ids.

    Args:
        engine: the ``TransformersEngine`` serving the model; its module is fine-tuned in place.
        config: every setting that changes what is learned (:class:`SFTConfig`).
        sampling: the LLM resource's sampling parameters for training rollouts (``temperature``, ``max_tokens``…).
        val_sampling: the same for validation rollouts (default: ``sampling``).
        resource_name: the name the agent finds the LLM under.
        metrics_dir: where ``metrics.csv`` and ``validation.csv`` go; ``None`` writes none.
        export_dir: where each iteration's selected examples go as ``iteration-<k>.jsonl``; ``None`` writes none.
        progress: show a progress bar (tqdm) with reward, selection and loss.
    """

    def __init__(
        self,
        engine: Any,
        config: SFTConfig | None = None,
        *,
        sampling: Mapping[str, Any] | None = None,
        val_sampling: Mapping[str, Any] | None = None,
        resource_name: str = "llm",
        metrics_dir: str | Path | None = None,
        export_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if not (hasattr(engine, "paused") and hasattr(engine, "model") and hasattr(engine, "serve")):
            raise TypeError(
                "SFT fine-tunes the module a TransformersEngine serves (agentlightning_engine.TransformersEngine); "
                f"got {type(engine).__name__}."
            )
        self.engine = engine
        self.config = config or SFTConfig()
        self.sampling = dict(sampling or {})
        self.val_sampling = dict(val_sampling) if val_sampling is not None else self.sampling
        self.resource_name = resource_name
        self.metrics_dir = Path(metrics_dir) if metrics_dir is not None else None
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.progress = progress

    # --- the loop -------------------------------------------------------------------------------------------

    async def run(self, train_dataset: Dataset | None, val_dataset: Dataset | None) -> SFTResult:
        """Run ``config.iterations`` iterations; returns the records of every iteration and validation."""
        config = self.config
        if not train_dataset:
            raise ValueError("SFT needs a non-empty training set: Trainer.fit(agent, train_dataset, ...).")
        torch.manual_seed(config.seed)
        rng = random.Random(config.seed)
        policy = self._policy()
        optimizer = make_optimizer(policy, config)
        pad_token_id = _pad_token_id(self.engine.tokenizer)
        metrics = MetricsLog(self.metrics_dir) if self.metrics_dir is not None else None
        result = SFTResult([], [], metrics_dir=self.metrics_dir, export_dir=self.export_dir)
        order = TaskOrder()

        with self.engine.serve(port=0) as server, agl.Gateway(server.url, self.store) as gateway:
            model = self.engine.model_name
            train_resources = await self.store.add_resources({self.resource_name: gateway.llm(model, **self.sampling)})
            val_resources = train_resources
            if self.val_sampling != self.sampling:
                val_resources = await self.store.add_resources(
                    {self.resource_name: gateway.llm(model, **self.val_sampling)}
                )
            bar = _progress_bar(config.iterations, self.progress)

            async def validate(iteration: int) -> None:
                if not val_dataset:
                    return
                record = await self._validate(val_dataset, iteration, val_resources.resources_id)
                result.validations.append(record)
                when = "of the untrained model" if iteration == 0 else f"after iteration {iteration}"
                message = (
                    f"validation {when}: success {record.success_rate:.1%}, mean reward {record.reward_mean:.3f} "
                    f"({record.rollouts} tasks, {record.seconds:.0f} s)"
                )
                _say(bar, message, self.progress)
                if metrics is not None:
                    metrics.validation(record)

            try:
                await validate(0)
                for iteration in range(1, config.iterations + 1):
                    started = time.perf_counter()
                    tasks = next_tasks(train_dataset, config.tasks_per_iteration, order, rng)
                    rollouts = await self.enqueue(
                        tasks,
                        RolloutMode.TRAIN,
                        resources_id=train_resources.resources_id,
                        group_size=config.rollouts_per_task,
                        metadata={"iteration": iteration},
                    )
                    finished = await self.wait(rollouts)
                    candidates = await read_candidates(self.store, finished, config.agents)
                    rollout_seconds = time.perf_counter() - started
                    _check_iteration(iteration, candidates)

                    if config.select is not None:
                        selected = list(config.select(candidates))
                    else:
                        selected = select_rollouts(candidates, min_reward=config.min_reward, best_of_n=config.best_of_n)
                    chats = [example for candidate in selected for example in candidate.examples]
                    result.examples += chats
                    if self.export_dir is not None:
                        write_jsonl(chats, self.export_dir / f"iteration-{iteration}.jsonl")
                    examples = token_examples(selected)

                    train_started = time.perf_counter()
                    tuned: FineTuneMetrics | None = None
                    if examples:
                        tuned = await asyncio.to_thread(self._fine_tune, policy, optimizer, examples, pad_token_id, rng)
                    rewards = [c.reward if c.reward is not None else 0.0 for c in candidates]
                    record = IterationRecord(
                        iteration=iteration,
                        rollouts=len(finished),
                        failed_rollouts=sum(1 for r in finished if r.status != RolloutStatus.SUCCEEDED),
                        **reward_summary(rewards, config.success_threshold),
                        selected_rollouts=len(selected),
                        examples=len(examples),
                        trained_tokens=tuned.tokens if tuned else 0,
                        steps=tuned.steps if tuned else 0,
                        loss=tuned.loss if tuned else None,
                        grad_norm=tuned.grad_norm if tuned else None,
                        rollout_seconds=rollout_seconds,
                        train_seconds=time.perf_counter() - train_started,
                        seconds=time.perf_counter() - started,
                    )
                    result.history.append(record)
                    if metrics is not None:
                        metrics.iteration(record)
                    if not examples:
                        _say(
                            bar,
                            f"iteration {iteration}: no rollout was selected; nothing to fine-tune on.",
                            self.progress,
                        )
                    bar.update(1)
                    bar.set_postfix(_postfix(record), refresh=True)
                await validate(config.iterations)
                if len(result.validations) > 1:
                    _say(bar, result.report(), self.progress)
            finally:
                bar.close()
        return result

    # --- the pieces -----------------------------------------------------------------------------------------

    def _fine_tune(
        self, policy: Any, optimizer: torch.optim.Optimizer, examples: Any, pad_token_id: int, rng: random.Random
    ) -> FineTuneMetrics:
        # The engine serves this very module: hold generation while the weights change; the next request sees them.
        with self.engine.paused():
            return fine_tune(policy, optimizer, examples, self.config, pad_token_id=pad_token_id, rng=rng)

    async def _validate(self, dataset: Dataset, iteration: int, resources_id: str) -> ValidationRecord:
        started = time.perf_counter()
        rollouts = await self.enqueue(
            dataset, RolloutMode.VAL, resources_id=resources_id, metadata={"iteration": iteration}
        )
        finished = await self.wait(rollouts)
        spans = await asyncio.gather(*(self.spans(r) for r in finished))
        rewards = [r if (r := final_reward(s)) is not None else 0.0 for s in spans]
        return ValidationRecord(
            iteration=iteration,
            rollouts=len(finished),
            failed_rollouts=sum(1 for r in finished if r.status != RolloutStatus.SUCCEEDED),
            **reward_summary(rewards, self.config.success_threshold),
            seconds=time.perf_counter() - started,
        )

    def _policy(self) -> Any:
        """The module to train: the engine's own, or (LoRA) the peft model wrapped around it in place, so that
        the engine generates with the adapter too."""
        model = self.engine.model
        lora = self.config.lora
        if lora is None:
            return model
        if hasattr(model, "peft_config"):
            raise ValueError("The engine's model already carries LoRA adapters; start from a fresh engine.")
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.target_modules))
        with warnings.catch_warnings():
            # peft asks transformers about gradient checkpointing through a deprecated name; nothing to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            policy = get_peft_model(model, config)
        policy.eval()  # like the engine's module: no dropout
        return policy


def _check_iteration(iteration: int, candidates: Sequence[Any]) -> None:
    """Stop with the reason when an iteration shows the run cannot learn anything."""
    if all(not c.succeeded for c in candidates):
        first = candidates[0].rollout.rollout_id
        raise NothingToTrain(
            f"Every rollout of iteration {iteration} failed (e.g. {first}); see why with `agl runs show {first}` "
            "against this store."
        )
    if not any(c.trajectory.transitions for c in candidates):
        raise NothingToTrain(
            f"Iteration {iteration} recorded no LLM call of the selected agents. Does the agent call the LLM "
            "resource's base_url (the gateway), and do SFTConfig.agents name its agents?"
        )


def _pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _say(bar: Any, message: str, progress: bool) -> None:
    """Above the progress bar when it shows, else to the log."""
    if progress:
        bar.write(message)
    else:
        log.info(message)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc="SFT", unit="it", disable=not enabled, dynamic_ncols=True)


def _postfix(record: IterationRecord) -> dict[str, str]:
    postfix = {
        "reward": f"{record.reward_mean:.2f}",
        "success": f"{record.success_rate:.0%}",
        "selected": f"{record.selected_rollouts}/{record.rollouts}",
    }
    if record.loss is not None:
        postfix["loss"] = f"{record.loss:.3f}"
    return postfix
