"""Agent Lightning for the OpenAI Agents SDK: its traces as spans of the active rollout, ready to train on.

from agentlightning_openai_agents import chat_completions_model, instrument

instrument()  # replaces the SDK's exporter to OpenAI: traces stay on this machine
agent = Agent(name="triage", model=chat_completions_model(llm), ...)
"""

from agentlightning_openai_agents._instrument import (
    TracingHidesWhatTrainingNeeds,
    instrument,
    instrumented_processor,
    uninstrument,
)
from agentlightning_openai_agents.model import chat_completions_model, model_settings
from agentlightning_openai_agents.processor import (
    AGENTS_SPAN_TYPE,
    GUARDRAIL_NAME,
    GUARDRAIL_TRIGGERED,
    HANDOFF_FROM,
    HANDOFF_TO,
    TURN,
    WORKFLOW_NAME,
    LightningTracingProcessor,
)

__all__ = [
    "LightningTracingProcessor",
    "instrument",
    "uninstrument",
    "instrumented_processor",
    "TracingHidesWhatTrainingNeeds",
    "chat_completions_model",
    "model_settings",
    "AGENTS_SPAN_TYPE",
    "WORKFLOW_NAME",
    "HANDOFF_FROM",
    "HANDOFF_TO",
    "GUARDRAIL_NAME",
    "GUARDRAIL_TRIGGERED",
    "TURN",
]
