"""What a critique shows of a candidate's runs: tasks, rewards, failures, messages and tool calls."""

from __future__ import annotations

from agentlightning_apo import Run, render_runs
from agentlightning_apo.candidates import Candidate, RoundRecord, SkippedEdit
from agentlightning_apo.history import round_table

import agentlightning as agl
from agentlightning.adapter import ChatExample


def run(number: int, reward: float, *, failed: bool = False, calls: list[ChatExample] | None = None) -> Run:
    return Run(
        rollout_id=f"ro-{number}",
        task={"question": f"q{number}"},
        reward=reward,
        status=agl.RolloutStatus.FAILED if failed else agl.RolloutStatus.SUCCEEDED,
        errors=["TimeoutError: the tool took too long"] if failed else [],
        calls=calls or [],
    )


TOOL_CALL = ChatExample(
    span_id="s1",
    agent_name="searcher",
    messages=[
        {"role": "system", "content": "Find the answer."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call-1", "function": {"name": "calculator", "arguments": '{"expr": "2+2"}'}}],
        },
        {"role": "tool", "tool_call_id": "call-1", "content": "4"},
        {"role": "assistant", "content": "The answer is 4."},
    ],
)


def test_runs_show_lowest_reward_first_with_messages_tool_calls_and_failures() -> None:
    text = render_runs([run(1, 1.0, calls=[TOOL_CALL]), run(2, 0.0, failed=True)], 10_000, 200)
    failed, good = text.split("\n\n")
    assert failed.startswith("### Run 1: reward 0, FAILED (failed)")
    assert 'Task: {"question": "q2"}' in failed and "Error: TimeoutError: the tool took too long" in failed
    assert "(no LLM call of the agent was recorded)" in failed
    assert good.startswith("### Run 2: reward 1, succeeded")
    assert "LLM call 1 by agent searcher:" in good
    assert "user: What is 2+2?" in good
    assert 'calls tool calculator({"expr": "2+2"})' in good
    assert "tool result (call-1): 4" in good and "assistant: The answer is 4." in good


def test_long_runs_are_cut_to_the_budget() -> None:
    long_call = ChatExample(span_id="s", messages=[{"role": "user", "content": "x" * 5000}])
    runs = [run(i, i / 10, calls=[long_call]) for i in range(10)]
    text = render_runs(runs, 1000, 300)
    assert len(text) < 1500
    assert "x" * 299 + "…" in text
    assert text.endswith("more run(s) left out for length.)")
    assert render_runs([], 1000, 300) == "(no runs)"


def test_the_round_table_lists_parents_children_and_skipped_edits() -> None:
    seed = Candidate("c0", 0, None, None, {"p": "Answer {q}."}, version=1, task_scores={"t": 0.0})
    child = Candidate("c1", 1, "c0", "p", {"p": "Answer {q} well."}, version=2, task_scores={"t": 1.0})
    record = RoundRecord(
        1, ["c0"], ["t"], {"c0": 0.0}, ["c1"], [SkippedEdit("c0", "p", "no block")], ["c1"], "c1", 1.0, 0.1
    )
    table = round_table(record, {"c0": seed, "c1": child})
    assert "APO round 1: best c1 (1.000)" in table
    assert "Answer {q} well." in table and "best" in table and "no block" in table and "skipped" in table
