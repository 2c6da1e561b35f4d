"""The `agl` command line, as a user types it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_span

import agentlightning as agl
from agentlightning import semconv
from agentlightning.cli import main


def _fill(db: Path) -> tuple[str, str]:
    """A store with one finished rollout that has a span tree and a reward; returns (rollout id, queued id)."""

    async def fill() -> tuple[str, str]:
        store = agl.SqliteStore(db)
        try:
            await store.add_resources({"prompt": agl.PromptTemplate(template="Q: {question}")}, "prompt-v1")
            started = await store.start_rollout(
                agl.RolloutRequest(input={"question": "2 + 2"}, mode=agl.RolloutMode.VAL, resources_id="prompt-v1")
            )
            rid, aid = started.rollout_id, started.attempt.attempt_id
            root = make_span(rid, aid, "invoke_agent solver", **{semconv.GEN_AI_AGENT_NAME: "solver"})
            child = make_span(rid, aid, "execute_tool calculator", **{semconv.GEN_AI_TOOL_NAME: "calculator"})
            child.parent_id = root.span_id
            reward = make_span(rid, aid, semconv.SPAN_REWARD, **{semconv.AGL_REWARD_VALUE: 0.75})
            reward.parent_id = root.span_id
            await store.add_many_spans([root, child, reward])
            await store.update_attempt(rid, aid, status=agl.AttemptStatus.SUCCEEDED)
            queued = await store.enqueue_rollout("later")
            return rid, queued.rollout_id
        finally:
            await store.close()

    return asyncio.run(fill())


def test_runs_list_shows_status_and_reward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rid, queued = _fill(tmp_path / "runs.db")
    assert main(["runs", "list", "--store", f"sqlite:///{tmp_path / 'runs.db'}"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if rid in line)
    assert "succeeded" in row and "0.75" in row and "val" in row
    assert "prompt-v1" in row  # the resources version it ran with (APO names one per candidate)
    assert any(queued in line and "queuing" in line for line in out.splitlines())

    assert main(["runs", "list", "--store", f"sqlite:///{tmp_path / 'runs.db'}", "--status", "queuing"]) == 0
    out = capsys.readouterr().out
    assert queued in out and rid not in out


def test_runs_show_renders_attempts_and_the_span_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rid, _ = _fill(tmp_path / "runs.db")
    assert main(["runs", "show", rid, "--store", f"sqlite:///{tmp_path / 'runs.db'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    root = next(i for i, line in enumerate(lines) if "invoke_agent solver" in line)
    tool = next(i for i, line in enumerate(lines) if "execute_tool calculator" in line)
    reward = next(i for i, line in enumerate(lines) if "reward=0.75" in line)
    indent = lambda line: len(line) - len(line.lstrip(" │├└─"))  # noqa: E731
    assert root < tool and root < reward
    assert indent(lines[tool]) > indent(lines[root]) and indent(lines[reward]) > indent(lines[root])
    assert "agent=solver" in lines[root] and "tool=calculator" in lines[tool]
    assert any("succeeded" in line for line in lines)


def test_errors_are_reported_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(tmp_path / "runs.db")
    assert main(["runs", "show", "ro-nope", "--store", f"sqlite:///{tmp_path / 'runs.db'}"]) == 1
    assert "No rollout with id 'ro-nope'" in capsys.readouterr().err
    assert main(["runs", "list", "--store", "sqlite:///does/not/exist.db"]) == 1
    assert "No store file" in capsys.readouterr().err
    assert main(["runs", "list", "--store", "mysql://x"]) == 1
    assert "Unknown store URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["runs", "list", "--store", f"sqlite:///{tmp_path / 'runs.db'}", "--status", "bogus"])


def test_serve_refuses_to_expose_the_store_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentlightning.cli",
            "store",
            "serve",
            "--store",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "without a token" in result.stderr


def test_core_pulls_in_no_model_or_agent_framework() -> None:
    """The agent side installs the core alone: no torch, litellm, agentops or agent framework comes with it."""
    forbidden = {
        "torch",
        "litellm",
        "agentops",
        "langchain",
        "langchain-core",
        "langgraph",
        "crewai",
        "autogen-agentchat",
        "openai-agents",
        "vllm",
        "transformers",
    }
    seen: set[str] = set()
    todo = ["agentlightning-core"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-"))
    assert not (seen & forbidden), seen & forbidden


def test_agl_engine_without_the_engine_package_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentlightning import cli

    monkeypatch.setattr(cli, "_package_command", lambda name: None)  # as in an environment without it
    assert main(["engine", "serve"]) == 2
    assert "`agl engine` comes with agentlightning-engine: pip install agentlightning-engine" in capsys.readouterr().err
