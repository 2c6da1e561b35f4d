"""Agent Lightning for AutoGen AgentChat: its model calls, tool calls and team runs as spans of the active rollout,
each model call named after the agent that made it.

::

    from agentlightning_autogen import chat_completion_client, instrument

    instrument()  # or agl.instrument("autogen")
    agent = AssistantAgent("solver", model_client=chat_completion_client(llm), tools=[...])
"""

from agentlightning_autogen._instrument import instrument, instrumented_recorder, uninstrument
from agentlightning_autogen.client import LightningChatCompletionClient
from agentlightning_autogen.model import LOCAL_MODEL_INFO, chat_completion_client
from agentlightning_autogen.recorder import (
    TEAM_NAME,
    TEAM_PARTICIPANTS,
    TEAM_STOP_REASON,
    TEAM_TYPE,
    LightningRecorder,
    agent_name_here,
)

__all__ = [
    "LightningRecorder",
    "LightningChatCompletionClient",
    "instrument",
    "uninstrument",
    "instrumented_recorder",
    "chat_completion_client",
    "LOCAL_MODEL_INFO",
    "agent_name_here",
    "TEAM_NAME",
    "TEAM_TYPE",
    "TEAM_PARTICIPANTS",
    "TEAM_STOP_REASON",
]
