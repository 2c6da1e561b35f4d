"""Algorithms: the interface, the baseline that only runs the agent, and what the trainers share."""

from agentlightning.algorithm.base import Algorithm, AlgorithmContext, Dataset
from agentlightning.algorithm.baseline import Baseline, BaselineResult
from agentlightning.algorithm.config import ConfigError, LoraSettings
from agentlightning.algorithm.reward_summary import RewardSummary, reward_summary
from agentlightning.algorithm.task_order import TaskOrder, next_tasks

__all__ = [
    "Algorithm",
    "AlgorithmContext",
    "Baseline",
    "BaselineResult",
    "ConfigError",
    "Dataset",
    "LoraSettings",
    "RewardSummary",
    "TaskOrder",
    "next_tasks",
    "reward_summary",
]
