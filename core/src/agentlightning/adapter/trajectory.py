"""From the spans of one attempt to a :class:`~agentlightning.types.Trajectory`.

This is the contract trainers rely on.

**LLM calls.** A span is an LLM call when ``gen_ai.operation.name`` is ``chat`` or
``text_completion``. Its transition carries ``gen_ai.input.messages``, ``gen_ai.output.messages``
and ``gen_ai.tool.definitions`` (JSON text; messages that are not JSON are kept as one plain
string), the model (``gen_ai.response.model``, else ``gen_ai.request.model``),
``gen_ai.response.id``, and the gateway's ``agentlightning.llm.prompt_token_ids``,
``completion_token_ids`` and ``completion_logprobs``. Calls are ordered by
``(end_time, sequence)``.

**One call, two spans.** An integration and the gateway (its spans carry ``agentlightning.llm.gateway``)
may both record the same call. A gateway span is paired with the integration's LLM-call span that is
its parent (directly or through ``agentlightning.llm.caller_traceparent``), else with the first
unpaired one that has its ``gen_ai.response.id``; pairs are one to one. A pair makes one transition,
read from the gateway span (token ids), ending when the later of the two ends, and belonging to the
gateway span's own ``gen_ai.agent.name`` if set, else to the agent the integration's span resolves to.

**Agents.** A call belongs to the agent named by its own ``gen_ai.agent.name``, else by that of
its nearest ancestor that has one (following ``parent_id`` among the attempt's spans, or the
gateway's ``agentlightning.llm.caller_traceparent`` where the parent is not among them), else to
no agent (``None``).

**Reward computations.** LLM calls inside a span marked ``agentlightning.operation.kind =
"reward"`` (an LLM judge, at any depth below it) are not the agent's: they never become
transitions and take no rewards.

**Rewards.** Reward spans are named ``agentlightning.reward`` and carry a numeric
``agentlightning.reward.value`` (see :func:`agentlightning.reward.reward_of`). The *final* reward
is the last one in sequence order (the runner records the agent's returned reward last). Every
other reward is *intermediate*: with reward spans ordered by ``(start_time, sequence)`` and calls
by ``(end_time, sequence)``, it goes to the last call that precedes it on that timeline, i.e.

    owner(r) = argmax over calls c with (c.end_time, c.sequence) < (r.start_time, r.sequence) of that key

and ``Transition.reward = sum of the intermediate rewards r with owner(r) = that call`` (``None``
when there are none). Owners are chosen among *all* the attempt's calls outside reward
computations, selected or not, so a reward that follows agent B's call never moves onto agent
A's. An intermediate reward that no call precedes lands in ``Trajectory.unassigned_rewards``.
Rewards recorded inside a reward computation count like any other.

**Selection.** ``agents`` picks whose calls become transitions: ``None`` for every call
(unnamed ones included), a collection of names, or a predicate on the name; with the last two,
calls of no agent are left out. Unselected agents are part of the environment: their calls still
own the rewards that follow them.

**Sequence.** ``sequence_id`` orders spans; when some span has none (spans not yet stored), the
order of the list passed in is taken as the sequence order.

Adapting is a pure function of the spans, linear in their number, and never fails on a
malformed attribute of one span: the attribute is skipped (or kept as a string, for messages)
and the reason logged at debug level on the ``agentlightning.adapter`` logger.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Sequence

from agentlightning import semconv
from agentlightning.adapter._llm_call import (
    is_llm_call,
    log,
    read_logprobs,
    read_messages,
    read_str,
    read_token_ids,
    read_tools,
)
from agentlightning.adapter._tree import SpanTree
from agentlightning.reward import reward_of
from agentlightning.types import Span, Trajectory, Transition

__all__ = ["AgentSelector", "TraceToTrajectory", "agent_filter"]

#: Which agents' LLM calls to train: ``None`` for all, a collection of names, or a predicate on the name.
AgentSelector = Collection[str] | Callable[[str], bool] | None


class TraceToTrajectory:
    """Turns the spans of one attempt into a :class:`~agentlightning.types.Trajectory`.

    See the module documentation for how calls, agents and rewards are read from the spans.

    Args:
        agents: whose LLM calls become transitions: ``None`` (default) for every call, a
            collection of agent names (a single string counts as one name), or a predicate
            called with each agent name. Calls of no agent are kept only when ``agents`` is ``None``.
    """

    def __init__(self, agents: AgentSelector = None) -> None:
        self.agents = agents
        self._is_selected = agent_filter(agents)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agents={self.agents!r})"

    def adapt(self, spans: Sequence[Span]) -> Trajectory:
        """The trajectory of the attempt that ``spans`` record.

        Raises:
            ValueError: if the spans belong to more than one attempt.
        """
        if not spans:
            return Trajectory()
        attempts = {(span.rollout_id, span.attempt_id) for span in spans}
        if len(attempts) > 1:
            shown = ", ".join(f"{rollout}/{attempt}" for rollout, attempt in sorted(attempts)[:5])
            raise ValueError(
                f"{type(self).__name__}.adapt takes the spans of one attempt, got spans of {len(attempts)} "
                f"(rollout/attempt: {shown}{', ...' if len(attempts) > 5 else ''}); adapt each attempt's spans "
                "separately, e.g. those of `store.query_spans(rollout_id, attempt_id)`."
            )
        (rollout_id, attempt_id) = next(iter(attempts))

        if all(span.sequence_id is not None for span in spans):
            ordered = sorted(spans, key=lambda span: span.sequence_id or 0)
        else:
            ordered = list(spans)
        tree = SpanTree(ordered)

        # (time, position in sequence order, ...): the position breaks ties in time.
        rewards: list[tuple[float, int, float]] = []
        recorded_calls: list[tuple[int, Span]] = []
        for position, span in enumerate(ordered):
            if span.name == semconv.SPAN_REWARD:
                value = reward_of(span)
                if value is None:
                    log.debug("span %s: reward span without a numeric reward value; ignoring it", span.span_id)
                else:
                    rewards.append((span.start_time, position, value))
            elif is_llm_call(span):
                recorded_calls.append((position, span))
        calls: list[tuple[float, int, Span, str | None]] = []
        for group in _same_calls(recorded_calls, tree):
            if any(tree.in_reward_computation(span) for _, span in group):
                continue
            end_time, position = max((_end(span), position) for position, span in group)
            span, agent_name = _joined(group, tree)
            calls.append((end_time, position, span, agent_name))
        calls.sort(key=lambda call: (call[0], call[1]))

        final_reward = rewards[-1][2] if rewards else None
        intermediate = sorted(rewards[:-1])
        call_keys = [(end_time, position) for end_time, position, _, _ in calls]
        assigned: dict[int, float] = {}
        unassigned: list[float] = []
        for start_time, position, value in intermediate:
            owner = bisect.bisect_left(call_keys, (start_time, position)) - 1
            if owner < 0:
                unassigned.append(value)
            else:
                assigned[owner] = assigned.get(owner, 0.0) + value

        transitions: list[Transition] = []
        for index, (_, _, span, agent_name) in enumerate(calls):
            if self._is_selected(agent_name):
                transitions.append(_transition(span, len(transitions), agent_name, assigned.get(index)))
        return Trajectory(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            transitions=transitions,
            final_reward=final_reward,
            unassigned_rewards=unassigned,
            agents=sorted({agent_name for _, _, _, agent_name in calls if agent_name is not None}),
        )


def _end(span: Span) -> float:
    return span.end_time if span.end_time is not None else span.start_time


def _is_gateway(span: Span) -> bool:
    # Spans the gateway recorded before it marked them are known by their token ids.
    attributes = span.attributes
    return attributes.get(semconv.AGL_LLM_GATEWAY) is True or semconv.AGL_COMPLETION_TOKEN_IDS in attributes


def _same_calls(calls: list[tuple[int, Span]], tree: SpanTree) -> list[list[tuple[int, Span]]]:
    """Pair each gateway span with the other recorder's span of the same call, if there is one: the span its
    ``caller_traceparent`` (or parent) names, else the first unpaired one with its ``gen_ai.response.id``.

    Pairs are one to one, and two spans of the same recorder are never one call, so an upstream that
    reuses response ids cannot merge distinct calls.
    """
    others = [i for i, (_, span) in enumerate(calls) if not _is_gateway(span)]
    by_span_id = {calls[i][1].span_id: i for i in others}
    by_response: dict[str, list[int]] = {}
    for i in others:
        response_id = read_str(calls[i][1], semconv.GEN_AI_RESPONSE_ID)
        if response_id:
            by_response.setdefault(response_id, []).append(i)
    partner_of: dict[int, int] = {}
    for i, (_, span) in enumerate(calls):
        if not _is_gateway(span):
            continue
        parent = tree.parent_of(span)
        partner = by_span_id.get(parent.span_id) if parent is not None else None
        if partner is None or partner in partner_of:
            response_id = read_str(span, semconv.GEN_AI_RESPONSE_ID)
            candidates = by_response.get(response_id, []) if response_id else []
            partner = next((j for j in candidates if j not in partner_of), None)
        if partner is not None:
            partner_of[partner] = i
    paired = set(partner_of.values())
    groups: list[list[tuple[int, Span]]] = []
    for i, call in enumerate(calls):
        if i in partner_of:
            groups.append([calls[partner_of[i]], call])
        elif i not in paired:
            groups.append([call])
    return groups


def _joined(group: list[tuple[int, Span]], tree: SpanTree) -> tuple[Span, str | None]:
    """The span a joined call's transition is read from (the gateway's), and its agent: the gateway span's own
    ``gen_ai.agent.name`` (named in its URL), else the name the integration's span resolves to, else the one
    the gateway span inherits."""
    main, *rest = [span for _, span in group]
    own = main.attributes.get(semconv.GEN_AI_AGENT_NAME)
    if isinstance(own, str) and own:
        return main, own
    for span in rest:
        if (name := tree.agent_name(span)) is not None:
            return main, name
    return main, tree.agent_name(main)


def agent_filter(agents: AgentSelector) -> Callable[[str | None], bool]:
    """Whether a call of the named agent (``None``: of no agent) is selected by ``agents``."""
    if agents is None:
        return lambda name: True
    if callable(agents):
        predicate = agents
        return lambda name: name is not None and bool(predicate(name))
    # A bare string is a Collection[str] of its characters; the caller meant one agent.
    names = frozenset([agents] if isinstance(agents, str) else agents)
    return lambda name: name is not None and name in names


def _transition(span: Span, sequence: int, agent_name: str | None, reward: float | None) -> Transition:
    # The readers return exactly the field types (JSON from json.loads, checked int / float lists), so
    # validating again would only cost time: pydantic walks every message value in Python for JsonValue.
    return Transition.model_construct(
        span_id=span.span_id,
        sequence=sequence,
        agent_name=agent_name,
        model=read_str(span, semconv.GEN_AI_RESPONSE_MODEL) or read_str(span, semconv.GEN_AI_REQUEST_MODEL),
        response_id=read_str(span, semconv.GEN_AI_RESPONSE_ID),
        prompt_token_ids=read_token_ids(span, semconv.AGL_PROMPT_TOKEN_IDS),
        completion_token_ids=read_token_ids(span, semconv.AGL_COMPLETION_TOKEN_IDS),
        logprobs=read_logprobs(span),
        input_messages=read_messages(span, semconv.GEN_AI_INPUT_MESSAGES),
        output_messages=read_messages(span, semconv.GEN_AI_OUTPUT_MESSAGES),
        tools=read_tools(span),
        reward=reward,
        start_time=span.start_time,
        end_time=span.end_time,
    )
