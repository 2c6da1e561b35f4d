"""Every span and attribute name the project writes.

LLM calls, agents and tools use the OpenTelemetry GenAI semantic conventions (``gen_ai.*``), so
spans from other OpenTelemetry GenAI instrumentations read the same way. What the conventions do
not cover (rewards, token ids, logprobs, annotations, ...) lives under ``agentlightning.*``.
"""

from __future__ import annotations

# --- OpenTelemetry GenAI: operations -------------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_OPERATION_CHAT = "chat"
GEN_AI_OPERATION_TEXT_COMPLETION = "text_completion"
GEN_AI_OPERATION_INVOKE_AGENT = "invoke_agent"
GEN_AI_OPERATION_EXECUTE_TOOL = "execute_tool"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"

# --- OpenTelemetry GenAI: request ----------------------------------------------------------------
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
#: OpenAI request parameters and the attribute each is recorded as (gateway and integrations alike).
GEN_AI_REQUEST_PARAMETERS = {
    "temperature": GEN_AI_REQUEST_TEMPERATURE,
    "top_p": GEN_AI_REQUEST_TOP_P,
    "max_tokens": GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": GEN_AI_REQUEST_MAX_TOKENS,
    "seed": GEN_AI_REQUEST_SEED,
    "n": GEN_AI_REQUEST_CHOICE_COUNT,
}

# --- OpenTelemetry GenAI: response and usage -----------------------------------------------------
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

# --- OpenTelemetry GenAI: content (JSON strings) -------------------------------------------------
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"

# --- OpenTelemetry GenAI: agents and tools -------------------------------------------------------
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"

# --- OpenTelemetry general -----------------------------------------------------------------------
ERROR_TYPE = "error.type"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"

# --- Agent Lightning: which rollout a span belongs to --------------------------------------------
# Set on the span or on its resource by exporters that cannot call the store directly (OTLP ingest).
AGL_ROLLOUT_ID = "agentlightning.rollout.id"
AGL_ATTEMPT_ID = "agentlightning.attempt.id"

# --- Agent Lightning: span names -----------------------------------------------------------------
SPAN_REWARD = "agentlightning.reward"
SPAN_MESSAGE = "agentlightning.message"
SPAN_OBJECT = "agentlightning.object"
SPAN_ANNOTATION = "agentlightning.annotation"
SPAN_EXCEPTION = "agentlightning.exception"
SPAN_OPERATION = "agentlightning.operation"

# --- Agent Lightning: rewards --------------------------------------------------------------------
AGL_REWARD_VALUE = "agentlightning.reward.value"
AGL_REWARD_NAME = "agentlightning.reward.name"
#: True on the reward that algorithms optimise when a span carries several named rewards.
AGL_REWARD_PRIMARY = "agentlightning.reward.primary"
#: Every named reward of a reward span, as ``agentlightning.reward.values.<name>``.
AGL_REWARD_VALUES_PREFIX = "agentlightning.reward.values."

# --- Agent Lightning: messages, objects, annotations ---------------------------------------------
AGL_MESSAGE_BODY = "agentlightning.message.body"
AGL_OBJECT_TYPE = "agentlightning.object.type"
AGL_OBJECT_JSON = "agentlightning.object.json"
AGL_ANNOTATION_PREFIX = "agentlightning.annotation."
AGL_OPERATION_NAME = "agentlightning.operation.name"
#: "reward" on the span of a reward computation (``agl.reward_computation``): LLM calls inside it are the
#: judge's, not the agent's, and never become training transitions.
AGL_OPERATION_KIND = "agentlightning.operation.kind"
OPERATION_KIND_REWARD = "reward"
AGL_OPERATION_INPUT = "agentlightning.operation.input"
AGL_OPERATION_OUTPUT = "agentlightning.operation.output"

# --- Agent Lightning: exact tokens of an LLM call (recorded by the gateway) ----------------------
AGL_PROMPT_TOKEN_IDS = "agentlightning.llm.prompt_token_ids"
AGL_COMPLETION_TOKEN_IDS = "agentlightning.llm.completion_token_ids"
AGL_COMPLETION_LOGPROBS = "agentlightning.llm.completion_logprobs"
#: W3C traceparent of the caller of the gateway, to join integration spans with gateway spans.
AGL_CALLER_TRACEPARENT = "agentlightning.llm.caller_traceparent"
#: ``True`` on the spans the gateway records (an integration may record the same call too).
AGL_LLM_GATEWAY = "agentlightning.llm.gateway"
