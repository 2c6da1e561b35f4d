"""LightningRL: the training loop. One iteration, top to bottom::

    tasks      = the next tasks_per_iteration training tasks (shuffled, reshuffled every pass)
    rollouts   = enqueue group_size rollouts of each task (one group id per task), naming the published LLM
    finished   = wait for all of them; read each one's spans
    trajectory = TraceToTrajectory().adapt(spans)            every agent's calls, gateway token ids joined in
               + runtime rewards (off by default)            tool errors, exceptions, annotations
    credited   = credit_trajectory(...), then select_agents  returns per call, then the trained agents' calls
    samples    = compute_advantages(groups)                  GRPO (+ step groups), equal groups skipped
    step       = train_step(micro-batches)                   clipped policy gradient, accumulated, one AdamW step
    validate every validate_every iterations; checkpoint every checkpoint_every

The *torch* backend: this process holds the policy (:mod:`agentlightning_rl.backend`). With a
:class:`~agentlightning_engine.TransformersEngine` the engine serves the very module being trained, so an update
needs no copy: the step runs inside ``engine.paused()`` and the next rollouts sample from the new weights. With a
:class:`~agentlightning_engine.VLLMEngine` this process trains a copy loaded from the same folder and the engine
reloads it after every step. (A verl backend for many GPUs will hand the same samples to verl; that is where it
will plug in.)
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import agentlightning as agl
from agentlightning import AgentLightningError
from agentlightning.algorithm import Algorithm, Dataset, next_tasks, reward_summary
from agentlightning.reward import final_reward
from agentlightning.types import Rollout, RolloutMode, RolloutStatus, Span
from agentlightning_rl.advantages import compute_advantages
from agentlightning_rl.agents import SHARED_ADAPTER, AdapterNotUsed, AgentAdapters, select_agents
from agentlightning_rl.backend import ReloadedWeights, backend_for
from agentlightning_rl.batch import make_micro_batches
from agentlightning_rl.checkpoint import TrainingState, load_checkpoint, new_shuffler, save_checkpoint
from agentlightning_rl.config import LightningRLConfig
from agentlightning_rl.credit import CreditedTrajectory, credit_trajectory
from agentlightning_rl.logprobs import takes_block_masks
from agentlightning_rl.metrics import IterationRecord, MetricsLog, ValidationRecord
from agentlightning_rl.precision import autocast_dtype, native_bf16
from agentlightning_rl.rewards import with_runtime_rewards
from agentlightning_rl.update import StepMetrics, make_optimizer, train_step

__all__ = ["LightningRL", "LightningRLResult", "NothingToTrain"]

log = logging.getLogger("agentlightning_rl")


class NothingToTrain(AgentLightningError):
    """An iteration produced nothing a step could learn from, for a reason the user must fix."""


@dataclass
class LightningRLResult:
    """What a run did: every iteration, every validation, and where its files are."""

    history: list[IterationRecord]
    validations: list[ValidationRecord]
    metrics_dir: Path | None
    checkpoint: Path | None
    #: Behind a server that reloads (VLLMEngine) with LoRA: the trained adapters it goes on serving, one PEFT
    #: folder per adapter (``model name -> folder`` in ``VLLMEngine.loras``).
    adapters_folder: Path | None = None

    @property
    def initial_validation(self) -> ValidationRecord | None:
        """The validation of the untrained model (iteration 0), if there was a validation set."""
        return next((v for v in self.validations if v.iteration == 0), None)

    @property
    def final_validation(self) -> ValidationRecord | None:
        """The last validation."""
        return self.validations[-1] if self.validations else None


class LightningRL(Algorithm):
    """Reinforcement learning of the LLM inside an agent, from the calls it made (module docstring).

    Run it with a trainer: ``agl.Trainer(algorithm=LightningRL(engine, config)).fit(agent, train, val)``.
    The agent receives the model as the ``agl.LLM`` resource ``resource_name``: a gateway URL (started here,
    in front of ``engine``) that records every call with its token ids and logprobs.

    Args:
        engine: the engine serving the policy: a ``TransformersEngine`` (its module is trained in place) or a
            started ``VLLMEngine`` (a copy is trained here and reloaded into it after every step).
        config: every setting that changes what is learned (:class:`LightningRLConfig`).
        sampling: the LLM resource's sampling parameters for training rollouts (``temperature``, ``top_p``,
            ``max_tokens``…); the agent's client applies them.
        val_sampling: the same for validation rollouts (default: ``sampling``).
        resource_name: the name the agent finds the LLM under.
        metrics_dir: where ``metrics.csv``, ``validation.csv``, TensorBoard logs and ``curve.png`` go
            (:mod:`agentlightning_rl.metrics`); ``None`` writes none.
        checkpoint_dir: where resumable checkpoints go (:mod:`agentlightning_rl.checkpoint`); ``None`` saves none.
        resume: continue from the checkpoint in ``checkpoint_dir``, if there is one.
        progress: show a progress bar (tqdm) with reward, success rate and tokens/s.
        reference_model: the frozen reference for ``kl_coef > 0`` with full fine-tuning (default: a copy of
            the initial weights; with LoRA the base model serves).
        policy: with an engine that reloads weights, the Hugging Face folder of the model it serves (default: the
            engine's ``model_folder``).
    """

    def __init__(
        self,
        engine: Any,
        config: LightningRLConfig | None = None,
        *,
        sampling: Mapping[str, Any] | None = None,
        val_sampling: Mapping[str, Any] | None = None,
        resource_name: str = "llm",
        metrics_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        reference_model: Any = None,
        policy: str | os.PathLike[str] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or LightningRLConfig()
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir, the folder to resume from.")
        self.sampling = dict(sampling or {})
        self.val_sampling = dict(val_sampling) if val_sampling is not None else self.sampling
        self.resource_name = resource_name
        self.metrics_dir = Path(metrics_dir) if metrics_dir is not None else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume = resume
        self.progress = progress
        self.reference_model = reference_model
        self._adapter = agl.TraceToTrajectory()  # every agent's calls: select after credit (agents.py)
        #: With an adapter per agent: agent -> the model name its adapter is served under (the gateway routes
        #: each agent's calls there).
        self.agent_models: dict[str, str] = {}
        #: The model the published LLM resource names (the engine's, or the shared adapter's behind a server
        #: that reloads).
        self.served_model: str = ""
        self.backend = backend_for(engine, policy)
        device = next(self.backend.model.parameters()).device
        #: The autocast dtype of the passes (``config.precision`` on this device); ``None``: float32.
        self.autocast_dtype = autocast_dtype(self.config.precision, device)
        if self.autocast_dtype is not None and not native_bf16(device):
            log.warning(
                "precision='bf16' on %s, which has no native bfloat16 (AVX-512 BF16 or AMX on a CPU): it is emulated "
                "and several times slower than float32; precision='auto' picks float32 here.",
                device,
            )

    # --- the loop -------------------------------------------------------------------------------------------

    async def run(self, train_dataset: Dataset | None, val_dataset: Dataset | None) -> LightningRLResult:
        """Train for ``config.iterations`` iterations; returns the records of every iteration and validation."""
        config = self.config
        if not train_dataset:
            raise ValueError("LightningRL needs a non-empty training set: Trainer.fit(agent, train_dataset, ...).")
        torch.manual_seed(config.seed)
        policy, adapters = self._policy()
        optimizer = make_optimizer(policy, config)
        reference = self._reference(policy)
        state = TrainingState()
        if self.resume:
            assert self.checkpoint_dir is not None
            loaded = load_checkpoint(self.checkpoint_dir, policy, optimizer)
            if loaded is not None:
                state = loaded
                self.backend.publish(policy)  # an engine that reloads still serves what it started with
        shuffler = new_shuffler(config.seed, state.shuffler_state)
        metrics = MetricsLog(self.metrics_dir) if self.metrics_dir is not None else None
        if metrics is not None and self.resume:
            metrics.rewind(state.iteration)
        pad_token_id = _pad_token_id(self.backend.tokenizer)
        # Calls sharing a prefix run it once: as prefix trees where the attention takes a 4D mask.
        prefix_trees = takes_block_masks(policy)

        with self._gateway() as gateway:
            model_name = self.served_model
            train_resources = await self.store.add_resources(
                {self.resource_name: gateway.llm(model_name, **self.sampling)}
            )
            val_resources = train_resources
            if self.val_sampling != self.sampling:
                val_resources = await self.store.add_resources(
                    {self.resource_name: gateway.llm(model_name, **self.val_sampling)}
                )

            async def validate(iteration: int) -> None:
                if val_dataset and not any(v.iteration == iteration for v in state.validations):
                    record = await self._validate(val_dataset, iteration, val_resources.resources_id)
                    state.validations.append(record)
                    when = "of the untrained model" if iteration == 0 else f"after iteration {iteration}"
                    message = (
                        f"validation {when}: success {record.success_rate:.1%}, mean reward {record.reward_mean:.3f} "
                        f"({record.rollouts} tasks, {record.seconds:.0f} s)"
                    )
                    if self.progress:
                        bar.write(message)
                    else:
                        log.info(message)
                    if metrics is not None:
                        metrics.validation(record)
                        metrics.plot(state.history, state.validations)
                    bar.set_postfix(_postfix(state), refresh=True)

            bar = _progress_bar(config.iterations, state.iteration, self.progress)
            try:
                await validate(0)
                for iteration in range(state.iteration + 1, config.iterations + 1):
                    started = time.perf_counter()
                    tasks = next_tasks(train_dataset, config.tasks_per_iteration, state, shuffler)
                    rollouts = await self.enqueue(
                        tasks,
                        RolloutMode.TRAIN,
                        resources_id=train_resources.resources_id,
                        group_size=config.group_size,
                        metadata={"iteration": iteration},
                    )
                    finished = await self.wait(rollouts)
                    spans = await asyncio.gather(*(self.spans(r) for r in finished))
                    rollout_seconds = time.perf_counter() - started

                    groups, rewards, completion_tokens = self._credited_groups(finished, spans)
                    advantages = compute_advantages(groups, config)
                    batches = make_micro_batches(
                        advantages.samples,
                        config.loss_aggregation,
                        micro_batch_size=config.micro_batch_size,
                        micro_batch_tokens=config.micro_batch_tokens,
                        pad_token_id=pad_token_id,
                        share_prompts=config.share_prompts,
                        prefix_trees=config.share_prompts and prefix_trees,
                    )
                    _check_iteration(iteration, finished, groups, advantages.skipped_groups)
                    step_started = time.perf_counter()
                    step: StepMetrics | None = None
                    if batches:
                        step = await asyncio.to_thread(self._step, policy, optimizer, batches, adapters, reference)
                    train_seconds = time.perf_counter() - step_started

                    record = IterationRecord(
                        iteration=iteration,
                        rollouts=len(finished),
                        failed_rollouts=sum(1 for r in finished if r.status != RolloutStatus.SUCCEEDED),
                        **reward_summary(rewards, config.success_threshold),
                        skipped_groups=len(advantages.skipped_groups),
                        sequences=step.sequences if step else 0,
                        trained_tokens=step.tokens if step else 0,
                        completion_tokens=completion_tokens,
                        rollout_seconds=rollout_seconds,
                        train_seconds=train_seconds,
                        seconds=time.perf_counter() - started,
                        loss=step.loss if step else None,
                        clip_fraction=step.clip_fraction if step else None,
                        approx_kl=step.approx_kl if step else None,
                        reference_kl=step.reference_kl if step else None,
                        grad_norm=step.grad_norm if step else None,
                        ratio_mean=step.ratio_mean if step else None,
                    )
                    state.iteration = iteration
                    state.history.append(record)
                    if metrics is not None:
                        metrics.iteration(record)
                    bar.update(1)
                    bar.set_postfix(_postfix(state), refresh=True)

                    last = iteration == config.iterations
                    if last or (config.validate_every and iteration % config.validate_every == 0):
                        await validate(iteration)
                    if self.checkpoint_dir is not None and (
                        last or (config.checkpoint_every and iteration % config.checkpoint_every == 0)
                    ):
                        state.shuffler_state = shuffler.getstate()
                        save_checkpoint(self.checkpoint_dir, policy, optimizer, state)
                await validate(state.iteration)  # a resumed run that had finished its iterations
            finally:
                bar.close()
                if metrics is not None:
                    metrics.plot(state.history, state.validations)
                    metrics.close()

        return LightningRLResult(
            history=state.history,
            validations=state.validations,
            metrics_dir=self.metrics_dir,
            checkpoint=self.checkpoint_dir / "latest" if self.checkpoint_dir is not None else None,
            adapters_folder=getattr(self.backend, "adapters_folder", None),
        )

    # --- the pieces -----------------------------------------------------------------------------------------

    def _credited_groups(
        self, finished: Sequence[Rollout], spans: Sequence[list[Span]]
    ) -> tuple[dict[str, list[CreditedTrajectory]], list[float], int]:
        """Group id → the credited trajectories of its rollouts (the trained agents' calls); each rollout's final
        reward (a failed one's is ``missing_final_reward``); the completion tokens generated in all calls."""
        config = self.config
        groups: dict[str, list[CreditedTrajectory]] = {}
        rewards: list[float] = []
        completion_tokens = 0
        for rollout, rollout_spans in zip(finished, spans, strict=True):
            trajectory = self._adapter.adapt(rollout_spans)
            completion_tokens += sum(len(t.completion_token_ids or []) for t in trajectory.transitions)
            trajectory = with_runtime_rewards(trajectory, rollout_spans, config.runtime_rewards)
            credited = credit_trajectory(trajectory, config)
            final = trajectory.final_reward
            rewards.append(final if final is not None else (config.missing_final_reward or 0.0))
            group_id = str(rollout.metadata.get("group_id", rollout.rollout_id))
            selected = select_agents(credited, config.agents)
            self._check_adapters(selected)
            groups.setdefault(group_id, []).append(selected)
        return groups, rewards, completion_tokens

    def _check_adapters(self, credited: CreditedTrajectory) -> None:
        """With an adapter per agent, each trained call must have been generated by its agent's adapter: its
        logprobs are the behaviour policy of that adapter's update."""
        for transition in credited.transitions:
            expected = self.agent_models.get(transition.agent_name or "")
            if expected is not None and transition.model != expected:
                raise AdapterNotUsed(
                    f"A call of agent {transition.agent_name!r} (span {transition.span_id}) was answered by model "
                    f"{transition.model!r}, not by its adapter {expected!r}: the gateway did not know whose call it "
                    f"was when it was made. Give the agent its own URL (llm.for_agent({transition.agent_name!r})), "
                    "or attribute its calls through an integration package (e.g. agentlightning-langchain), which "
                    "names the agent on each request."
                )

    def _step(
        self,
        policy: Any,
        optimizer: torch.optim.Optimizer,
        batches: list[Any],
        adapters: AgentAdapters | None,
        reference: Any,
    ) -> StepMetrics:
        with self.backend.updating():
            metrics = train_step(policy, optimizer, batches, self.config, adapters=adapters, reference_model=reference)
        self.backend.publish(policy)
        return metrics

    async def _validate(self, dataset: Dataset, iteration: int, resources_id: str) -> ValidationRecord:
        started = time.perf_counter()
        rollouts = await self.enqueue(
            dataset, RolloutMode.VAL, resources_id=resources_id, metadata={"iteration": iteration}
        )
        finished = await self.wait(rollouts)
        spans = await asyncio.gather(*(self.spans(r) for r in finished))
        missing = self.config.missing_final_reward or 0.0
        rewards = [r if (r := final_reward(s)) is not None else missing for s in spans]
        return ValidationRecord(
            iteration=iteration,
            rollouts=len(finished),
            failed_rollouts=sum(1 for r in finished if r.status != RolloutStatus.SUCCEEDED),
            **reward_summary(rewards, self.config.success_threshold),
            seconds=time.perf_counter() - started,
        )

    def _policy(self) -> tuple[Any, AgentAdapters | None]:
        """The module to train: the engine's own, or (LoRA) the peft model wrapped around it in place, so the
        engine generates with the adapter too."""
        model = self.backend.model
        self.served_model = name = self.engine.model_name
        if self.config.lora is None:
            return model, None
        if hasattr(model, "peft_config"):  # a second run on the same engine
            raise ValueError("The engine's model already carries LoRA adapters; start from a fresh engine.")
        lora = self.config.lora
        adapters = AgentAdapters(model, lora, self.config.trained_agent_names if lora.adapter_per_agent else None)
        served: dict[str, str] = {}
        if adapters.per_agent:
            # Each trained agent's calls reach its own adapter; everyone else's, the base model.
            self.agent_models = {agent: f"{name}@{agent}" for agent in adapters.adapter_names}
            served = {self.agent_models[agent]: adapter for agent, adapter in adapters.adapter_names.items()}
        elif isinstance(self.backend, ReloadedWeights):
            # The server holds the base weights: the shared adapter gets a name of its own, which every call asks for.
            self.served_model = f"{name}@{SHARED_ADAPTER}"
            served = {self.served_model: SHARED_ADAPTER}
        # (Otherwise the engine's own module carries the shared adapter, active for every call.)
        if served:
            self.backend.serve_adapters(adapters.model, served)
        return adapters.model, adapters

    def _reference(self, policy: Any) -> Any:
        if self.config.kl_coef == 0 or self.config.lora is not None:
            return self.reference_model  # none needed, or the base model under the adapters serves
        if self.reference_model is not None:
            return self.reference_model
        reference = copy.deepcopy(policy)
        reference.requires_grad_(False)
        return reference

    @contextmanager
    def _gateway(self) -> Iterator[agl.Gateway]:
        """The engine served on 127.0.0.1, and a gateway in front of it recording into this run's store."""
        try:
            # The engine samples in the step's arithmetic, so a first step's importance ratios are ~1.
            self.backend.generate_in(self.autocast_dtype)
            with self.backend.served() as url, agl.Gateway(url, self.store, agent_models=self.agent_models) as gateway:
                yield gateway
        finally:
            self.backend.close()


def _check_iteration(
    iteration: int,
    finished: Sequence[Rollout],
    groups: Mapping[str, list[CreditedTrajectory]],
    skipped: Mapping[str, str],
) -> None:
    """Stop with the reason when an iteration shows the run cannot learn anything."""
    if all(r.status != RolloutStatus.SUCCEEDED for r in finished):
        raise NothingToTrain(
            f"Every rollout of iteration {iteration} failed (e.g. {finished[0].rollout_id}); see why with "
            f"`agl runs show {finished[0].rollout_id}` against this store."
        )
    if not any(trajectory.transitions for group in groups.values() for trajectory in group):
        raise NothingToTrain(
            f"Iteration {iteration} recorded no LLM call of the trained agents. Does the agent call the LLM "
            "resource's base_url (the gateway), and do LightningRLConfig.agents name its agents?"
        )


def _pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, initial=initial, desc="LightningRL", unit="it", disable=not enabled, dynamic_ncols=True)


def _postfix(state: TrainingState) -> dict[str, str]:
    postfix: dict[str, str] = {}
    if state.history:
        last = state.history[-1]
        postfix["reward"] = f"{last.reward_mean:.2f}"
        postfix["success"] = f"{last.success_rate:.0%}"
        postfix["gen tok/s"] = f"{last.rollout_tokens_per_second:.0f}"
        postfix["train tok/s"] = f"{last.train_tokens_per_second:.0f}"
    if state.validations:
        postfix["val"] = f"{state.validations[-1].success_rate:.0%}"
    return postfix
