"""LightningRL: reinforcement learning for the LLMs inside agents, from the calls they made.

``LightningRL`` (:mod:`agentlightning_rl.algorithm`) is the loop; run it with a trainer::

    rl = LightningRL(TransformersEngine("smollm2-135m"), LightningRLConfig(iterations=20))
    result = agl.Trainer(algorithm=rl, store=agl.SqliteStore("runs.db")).fit(agent, train_tasks, val_tasks)

The pieces, in the order a training step uses them::

    trajectory = agl.TraceToTrajectory().adapt(spans)                  # every agent's calls (core)
    trajectory = with_runtime_rewards(trajectory, spans, config.runtime_rewards)
    credited = select_agents(credit_trajectory(trajectory, config), config.agents)
    advantages = compute_advantages({group_id: [credited, ...]}, config)
    batches = make_micro_batches(advantages.samples, config.loss_aggregation, micro_batch_size=...,
                                 micro_batch_tokens=...)
    metrics = train_step(model, optimizer, batches, config)
"""

from agentlightning_rl.advantages import Advantages, Sample, compute_advantages, group_advantages
from agentlightning_rl.agents import AdapterNotUsed, AgentAdapters, UntrainedAgent, agent_filter, select_agents
from agentlightning_rl.algorithm import LightningRL, LightningRLResult, NothingToTrain
from agentlightning_rl.batch import InvalidLogprobs, MicroBatch, SharedPrompts, make_micro_batches
from agentlightning_rl.checkpoint import CheckpointError, TrainingState, load_checkpoint, save_checkpoint
from agentlightning_rl.config import (
    ConfigError,
    CreditMode,
    LightningRLConfig,
    LoraSettings,
    LossAggregation,
    Precision,
    RuntimeRewardRules,
)
from agentlightning_rl.credit import CreditedTrajectory, MissingFinalReward, credit_trajectory, returns
from agentlightning_rl.logprobs import (
    batch_logprobs,
    completion_logprobs,
    naive_completion_logprobs,
    shared_prompt_logprobs,
    takes_block_masks,
    tree_logprobs,
)
from agentlightning_rl.loss import LossMetrics, policy_loss
from agentlightning_rl.metrics import IterationRecord, MetricsLog, ValidationRecord
from agentlightning_rl.rewards import RuntimeReward, add_runtime_rewards, runtime_rewards, with_runtime_rewards
from agentlightning_rl.update import StepMetrics, make_optimizer, reference_logprobs, train_step

__all__ = [
    # the loop
    "LightningRL",
    "LightningRLResult",
    "NothingToTrain",
    "IterationRecord",
    "ValidationRecord",
    "MetricsLog",
    "CheckpointError",
    "TrainingState",
    "load_checkpoint",
    "save_checkpoint",
    # configuration
    "LightningRLConfig",
    "LoraSettings",
    "RuntimeRewardRules",
    "CreditMode",
    "LossAggregation",
    "Precision",
    "ConfigError",
    # rewards and credit
    "RuntimeReward",
    "runtime_rewards",
    "add_runtime_rewards",
    "with_runtime_rewards",
    "CreditedTrajectory",
    "MissingFinalReward",
    "credit_trajectory",
    "returns",
    # advantages
    "Advantages",
    "Sample",
    "compute_advantages",
    "group_advantages",
    # agents
    "agent_filter",
    "select_agents",
    "AgentAdapters",
    "UntrainedAgent",
    "AdapterNotUsed",
    # batches, logprobs, loss, step
    "MicroBatch",
    "SharedPrompts",
    "InvalidLogprobs",
    "make_micro_batches",
    "batch_logprobs",
    "completion_logprobs",
    "shared_prompt_logprobs",
    "takes_block_masks",
    "tree_logprobs",
    "naive_completion_logprobs",
    "LossMetrics",
    "policy_loss",
    "StepMetrics",
    "make_optimizer",
    "reference_logprobs",
    "train_step",
]
