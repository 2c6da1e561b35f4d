"""Algorithms: the interface, and the baseline that only runs the agent."""

from agentlightning.algorithm.base import Algorithm, AlgorithmContext, Dataset
from agentlightning.algorithm.baseline import Baseline, BaselineResult

__all__ = ["Algorithm", "AlgorithmContext", "Baseline", "BaselineResult", "Dataset"]
