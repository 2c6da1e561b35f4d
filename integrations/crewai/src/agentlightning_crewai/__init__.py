"""Agent Lightning for CrewAI: its crews, tasks, agents, LLM calls and tool uses as spans of the active rollout,
each LLM call named after the role of the agent that made it.

::

    from agentlightning_crewai import crewai_llm, instrument

    instrument()  # or agl.instrument("crewai")
    agent = Agent(role="researcher", goal=..., backstory=..., llm=crewai_llm(llm), tools=[...])
"""

from agentlightning_crewai._instrument import (
    LOCAL_ONLY_ENVIRONMENT,
    instrument,
    instrumented_listener,
    uninstrument,
)
from agentlightning_crewai.listener import (
    CREW_INPUTS,
    CREW_NAME,
    CREW_TOTAL_TOKENS,
    TASK_DESCRIPTION,
    TASK_ID,
    TASK_NAME,
    TOOL_FROM_CACHE,
    LightningListener,
)
from agentlightning_crewai.model import crewai_llm

__all__ = [
    "LightningListener",
    "instrument",
    "uninstrument",
    "instrumented_listener",
    "crewai_llm",
    "LOCAL_ONLY_ENVIRONMENT",
    "CREW_NAME",
    "CREW_INPUTS",
    "CREW_TOTAL_TOKENS",
    "TASK_ID",
    "TASK_NAME",
    "TASK_DESCRIPTION",
    "TOOL_FROM_CACHE",
]
