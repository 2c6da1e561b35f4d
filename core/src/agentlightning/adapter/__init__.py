"""Adapters: the training view of an attempt's spans.

- :class:`TraceToTrajectory` gives a :class:`~agentlightning.types.Trajectory`: the selected
  agents' LLM calls in order, with token ids, logprobs and intermediate rewards, plus the final
  reward. This is what RL trainers consume.
- :class:`TraceToMessages` gives one :class:`ChatExample` per selected call (prompt messages,
  then the response), with the final reward. This is what SFT and APO consume.

Both take the spans of one attempt, are pure functions of them, and never fail on a malformed
attribute of one span. :mod:`agentlightning.adapter.trajectory` states how calls, agents,
reward computations and rewards are read.
"""

from agentlightning.adapter.messages import ChatExample, TraceToMessages
from agentlightning.adapter.trajectory import AgentSelector, TraceToTrajectory, agent_filter

__all__ = ["AgentSelector", "TraceToTrajectory", "TraceToMessages", "ChatExample", "agent_filter"]
