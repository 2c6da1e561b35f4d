"""The research crew example (examples/research_crew): its corpus, question generator, lookup tool and reward; the
CrewAI crew run by ``Trainer.dev`` through a real ``agl.Gateway`` in front of a real ``TransformersEngine``; and
train.py.

The crew's engine serves a scripted stand-in model that plays both agents (a right lookup, a lookup of a place not
in the corpus, a researcher that answers without its tool; a writer that answers, or copies the whole record), so
the rewards are known. train.py runs on a tiny Llama first taught (in seconds) the replies of the smoke run's
prompts, which are recorded from the real crew. CrewAI's telemetry and trace uploads are off, its files go to a
temporary home, and guards fail any test whose process connects to, or looks up, another machine.

Needs CrewAI (which pins ``openai<3``, so it runs in the CrewAI sessions, not with the OpenAI Agents SDK), the
engine, LightningRL and peft.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("crewai") is None:  # finds it without importing it: HOME is not set yet
    pytest.skip("the research crew example needs CrewAI (nox -s crewai_latest)", allow_module_level=True)

# Before CrewAI is imported: its files (user data, memory, the first-run marker) go under HOME, and nothing of it
# may leave this machine.
HOME = tempfile.mkdtemp(prefix="agl-research-crew-home-")
os.environ.update(
    HOME=HOME,
    XDG_DATA_HOME=os.path.join(HOME, ".local", "share"),
    CREWAI_STORAGE_DIR="agentlightning-tests",
    OPENAI_API_KEY="sk-test-never-sent",
    HF_HUB_OFFLINE="1",
)

from agentlightning_crewai import LOCAL_ONLY_ENVIRONMENT, uninstrument  # noqa: E402
from agentlightning_engine import EngineServer  # noqa: E402
from agentlightning_engine.testing import load_smollm2_tokenizer, serve_scripted  # noqa: E402

import agentlightning as agl  # noqa: E402
from agentlightning import semconv  # noqa: E402
from agentlightning.testing import is_gateway, rollout_spans  # noqa: E402
from agentlightning.testing import no_outbound_connections as no_outbound_connections  # noqa: E402  # autouse
from agentlightning.testing import store as store  # noqa: E402  # the fixture
from examples import EXAMPLES, load_example, teach, tiny_llama  # noqa: E402

EXAMPLE = EXAMPLES / "research_crew"
dataset = load_example("research_crew", "dataset")
crew = load_example("research_crew", "agent")


@pytest.fixture(scope="module", autouse=True)
def crewai_restored() -> Iterator[None]:
    """The crew instruments CrewAI in this process; give CrewAI its event bus back afterwards."""
    yield
    uninstrument()


@pytest.fixture(autouse=True)
def no_outbound_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test if anything in it looked up a host other than this machine (an exporter with no network
    never gets as far as connecting)."""
    lookups: list[str] = []
    getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in ("127.0.0.1", "localhost", "::1", None):
            lookups.append(name)
            raise socket.gaierror(f"test guard: no lookups of other machines ({name})")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield lookups
    assert not lookups, f"tried to look up another machine: {lookups}"


# --- the corpus, the questions, the tool, the reward -------------------------------------------------------------


def test_the_generator_is_seeded_and_more_tasks_extend_the_list() -> None:
    tasks = dataset.make_tasks(40, 3, seed=4)
    assert [t.input for t in tasks] == [t.input for t in dataset.make_tasks(40, 3, seed=4)]
    assert [t.input for t in tasks[:10]] == [t.input for t in dataset.make_tasks(10, 3, seed=4)]
    assert [t.input for t in tasks] != [t.input for t in dataset.make_tasks(40, 3, seed=5)]
    assert len({t.id for t in tasks}) == 40


@pytest.mark.parametrize("level", sorted(dataset.LEVELS))
def test_each_level_asks_what_it_says_and_every_answer_is_the_corpus_fact(level: int) -> None:
    difficulty = dataset.LEVELS[level]
    tasks = dataset.make_tasks(200, level, seed=0)
    fields = {str(t.input["field"]) for t in tasks}
    assert fields == set(dataset.FIELDS[: difficulty.fields])
    paraphrased = 0
    for task in tasks:
        entity, field, question = str(task.input["entity"]), str(task.input["field"]), str(task.input["question"])
        assert task.input["answer"] == dataset.CORPUS[entity][dataset.FIELDS.index(field)]
        wordings = [w.format(entity=entity) for w in dataset.QUESTIONS[field]]
        assert question in wordings and entity in question
        paraphrased += question != wordings[0]
    assert paraphrased / len(tasks) == pytest.approx(difficulty.paraphrase, abs=0.1)


def test_a_difficulty_out_of_range_is_refused_with_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="between 1 and 6"):
        dataset.Difficulty(fields=7)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dataset.Difficulty(paraphrase=1.5)
    with pytest.raises(ValueError, match=r"levels are \[1, 2, 3, 4\]"):
        dataset.make_tasks(1, 9)


def test_the_corpus_is_made_up_and_each_fact_is_told_apart_from_the_others() -> None:
    assert len(dataset.CORPUS) == 24 and not set(dataset.CORPUS) & set(crew.EXAMPLE_RECORDS)
    for entity, values in dataset.CORPUS.items():
        line = dataset.record(entity)
        assert line.startswith(f"{entity}: capital {values[0]}; founder {values[1]};") and line.endswith(".")
        # The reward asks that an answer name the fact and no other: no fact may contain another of its entity's.
        for value in values:
            assert [other for other in values if crew.mentions(value, other)] == [value], entity


def test_lookup_finds_a_place_whatever_the_case_and_says_when_it_has_none() -> None:
    assert crew.lookup.run(entity="Velmora") == dataset.record("Velmora")
    assert crew.lookup.run(entity=" velmora. ") == dataset.record("Velmora")
    assert crew.lookup.run(entity="Zorbia") == "No entry for 'Zorbia' in the corpus."


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("The capital of Velmora is Dranholt.", "Dranholt", True),
        ("dranholt", "Dranholt", True),
        ("It flows as the Amber\n run.", "Amber Run", True),
        ("Founded in 1712.", "1712", True),
        ("In the 1712s.", "1712", False),
        ("The Iskar.", "Isk", False),
        ("", "Isk", False),
    ],
)
def test_mentions_reads_a_value_as_words_of_its_own(text: str, value: str, expected: bool) -> None:
    assert crew.mentions(text, value) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital of Velmora is Dranholt.", 1.0),
        ("DRANHOLT", 1.0),
        ("Velmora's capital is Kelvane.", 0.0),  # another place's capital
        ("Dranholt, founded 1712.", 0.0),  # and another fact of Velmora's
        (dataset.record("Velmora"), 0.0),  # the whole record is not an answer
        ("I do not know.", 0.0),
    ],
)
def test_the_reward_asks_for_the_fact_and_no_other(text: str, expected: float) -> None:
    assert crew.reward(text, "Velmora", "capital") == expected


# --- the crew through the gateway and the engine ---------------------------------------------------------------


def tool_call(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def asked(prompt: str) -> tuple[str, str, str]:
    """The agent (its role, from ``You are <role>.``), the question and the last user message of a prompt."""
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt, re.DOTALL)
    role = re.match(r"You are (\w+)\.", turns[0][1])
    last = [text for kind, text in turns if kind == "user"][-1]
    question = re.search(r"Current Task: .*?: (.*?\?)", last)
    assert role and question, prompt
    return role[1], question[1], last


def plan(task: dict[str, Any]) -> tuple[str | None, float]:
    """What the scripted crew does with ``task``: the entity its researcher looks up (``None``: no tool call), and
    the reward. The researcher looks up the right place, one that is not in the corpus, or answers without its tool,
    by the place's position in the corpus; the writer names the fact, except a year, where it copies the record."""
    entity = str(task["entity"])
    position = sorted(dataset.CORPUS).index(entity) % 3
    looked = (entity, "Zorbia", None)[position]
    return looked, 1.0 if looked == entity and task["field"] != "founded" else 0.0


def scripted_reply(prompt: str) -> str:
    """The scripted model: it reads whose prompt it is and the question, and plays that agent as :func:`plan` says."""
    role, question, last = asked(prompt)
    entity = next(name for name in dataset.CORPUS if name in question)
    if role == crew.RESEARCHER:
        looked, _ = plan({"entity": entity, "field": ""})
        return "I will find it." if looked is None else tool_call("lookup", entity=looked)
    assert role == crew.WRITER, prompt
    research = re.search(r"context you're working with:\n(.*?)\n", last)
    if research is None or not research[1].startswith(f"{entity}:"):
        return "I do not know."
    field = next(
        f for f, wordings in dataset.QUESTIONS.items() if any(w.format(entity=entity) == question for w in wordings)
    )
    if field == "founded":
        return research[1]
    return f"The {field} of {entity} is {dataset.CORPUS[entity][dataset.FIELDS.index(field)]}."


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[EngineServer]:
    with serve_scripted(scripted_reply) as server:
        yield server


def llm_calls(spans: list[agl.Span]) -> list[agl.Span]:
    """The integration's spans of LLM calls (not the gateway's), in call order."""
    return [
        s
        for s in spans
        if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.GEN_AI_OPERATION_CHAT and not is_gateway(s)
    ]


def test_each_question_is_looked_up_answered_and_rewarded(
    scripted_server: EngineServer, store: agl.SqliteStore
) -> None:
    tasks = dataset.make_tasks(12, 4, seed=3)
    plans = [plan(task.input) for task in tasks]
    assert {
        looked is None or looked == task.input["entity"] for (looked, _), task in zip(plans, tasks, strict=True)
    } == {
        True,
        False,
    }
    assert {r for _, r in plans} == {0.0, 1.0} and None in {looked for looked, _ in plans}
    with agl.Gateway(scripted_server.url, store) as gateway:
        llm = gateway.llm("scripted", temperature=0.7)
        result = agl.Trainer(store=store, initial_resources={"llm": llm}, max_concurrency=6).dev(
            crew.research_crew, tasks
        )
    assert result.succeeded == len(tasks)
    by_task = {str(rollout.metadata["task_id"]): (rollout, reward) for rollout, reward in result.rollouts}
    for task, (looked, reward) in zip(tasks, plans, strict=True):
        rollout, got = by_task[task.id]
        assert got == reward, (task.input, got)
        spans = rollout_spans(store, rollout)
        assert crew.looked_up(spans) == looked
        # One call of each agent, named after its role on the integration's span and on the gateway's (the
        # request's header), with the gateway's token ids.
        assert [s.attributes.get(semconv.GEN_AI_AGENT_NAME) for s in llm_calls(spans)] == ["researcher", "writer"]
        gateway_spans = sorted((s for s in spans if is_gateway(s)), key=lambda s: s.start_time)
        assert [s.attributes.get(semconv.GEN_AI_AGENT_NAME) for s in gateway_spans] == ["researcher", "writer"]
        calls = agl.TraceToTrajectory().adapt(spans).transitions
        assert [c.agent_name for c in calls] == ["researcher", "writer"]
        assert all(c.has_token_ids and c.logprobs for c in calls)
        assert [c.agent_name for c in agl.TraceToTrajectory(agents=["researcher"]).adapt(spans).transitions] == [
            "researcher"
        ]
        tools = [s for s in spans if s.attributes.get(semconv.GEN_AI_TOOL_NAME)]
        if looked is None:
            assert tools == []
        else:
            (tool,) = tools
            assert tool.attributes[semconv.GEN_AI_AGENT_NAME] == "researcher"
            assert json.loads(str(tool.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"entity": looked}
            assert tool.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == crew.lookup.run(entity=looked)


def test_each_agent_sees_its_examples_then_its_task_and_the_writer_decides_greedily(
    scripted_server: EngineServer, store: agl.SqliteStore
) -> None:
    task = next(t for t in dataset.make_tasks(20, 3, seed=0) if plan(t.input) == (t.input["entity"], 1.0))
    question, entity = str(task.input["question"]), str(task.input["entity"])
    with agl.Gateway(scripted_server.url, store) as gateway:
        llm = gateway.llm("scripted", temperature=0.7)
        result = agl.Trainer(store=store, initial_resources={"llm": llm}).dev(crew.research_crew, [task])
    assert result.mean_reward == 1.0
    spans = rollout_spans(store, result.rollouts[0][0])
    researcher, writer = agl.TraceToTrajectory().adapt(spans).transitions
    for call, role in ((researcher, crew.RESEARCHER), (writer, crew.WRITER)):
        messages = [(m["role"], m["content"]) for m in call.input_messages]
        assert messages[0][0] == "system" and messages[0][1].startswith(f"You are {role}.")
        *examples, (last_role, last) = messages[1:]
        assert last_role == "user" and question in last
        # CrewAI's own user message, with an example's question (and research) in place of the task's.
        assert len(examples) == 2 * len(crew.EXAMPLES[role])
        for (example_question, reply), (user, answer) in zip(
            crew.EXAMPLES[role], zip(examples[::2], examples[1::2], strict=True), strict=True
        ):
            assert user[0] == "user" and answer == ("assistant", reply)
            assert user[1] == last.replace(question, example_question).replace(
                dataset.record(entity), next(r for n, r in crew.EXAMPLE_RECORDS.items() if n in example_question)
            )
    assert dataset.record(entity) in writer.input_messages[-1]["content"]
    assert dataset.record(entity) not in str(researcher.input_messages)
    # The researcher samples as the resource says; the writer, not trained by default, greedily.
    gateway_calls = sorted((s for s in spans if is_gateway(s)), key=lambda s: s.start_time)
    assert [s.attributes.get(semconv.GEN_AI_REQUEST_TEMPERATURE) for s in gateway_calls] == [0.7, 0.0]


def test_crewai_stays_on_this_machine_and_out_of_the_users_home() -> None:
    from crewai.utilities.paths import db_storage_path

    for name, value in LOCAL_ONLY_ENVIRONMENT.items():
        assert os.environ[name] == value, name
    assert Path(db_storage_path()).resolve().is_relative_to(Path(HOME).resolve())


# --- the training script on a tiny model -----------------------------------------------------------------------


# The smoke run's questions: train.py draws them from these seeds of the generator.
SMOKE_TRAIN = dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=1000)
SMOKE_VAL = dataset.make_tasks(1, dataset.DEFAULT_LEVEL, seed=2000)


@pytest.fixture(scope="module")
def taught_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (SmolLM2's tokenizer) taught the smoke run's prompts, recorded from the real crew: the
    researcher looks up the training question's place whatever the question, and the writer answers with the
    training question's fact: right on it, wrong on the validation question."""
    (trained,) = SMOKE_TRAIN
    entity, answer = str(trained.input["entity"]), str(trained.input["answer"])
    assert SMOKE_VAL[0].input["entity"] != entity
    lessons: list[tuple[str, str]] = []

    def reply(prompt: str) -> str:
        said = tool_call("lookup", entity=entity) if asked(prompt)[0] == crew.RESEARCHER else f"It is {answer}."
        lessons.append((prompt, said + "<|im_end|>"))
        return said

    store = agl.SqliteStore(tmp_path_factory.mktemp("record") / "runs.db")
    with serve_scripted(reply) as server, agl.Gateway(server.url, store) as gateway:
        agl.Trainer(store=store, initial_resources={"llm": gateway.llm("scripted")}).dev(
            crew.research_crew, SMOKE_TRAIN + SMOKE_VAL
        )
    assert len(lessons) == 4
    tokenizer = load_smollm2_tokenizer()
    model = tiny_llama(tokenizer)
    teach(model, tokenizer, lessons)
    folder = tmp_path_factory.mktemp("taught")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_training_script_trains_the_researcher_and_reports_both_agents(taught_model: Path, tmp_path: Path) -> None:
    # The README's command, shrunk: two iterations of one question on the tiny model, greedy validation.
    arguments = ["--model", str(taught_model), "--iterations", "2", "--tasks-per-iteration", "1", "--group-size", "2"]
    arguments += ["--train-tasks", "1", "--val-tasks", "1", "--val-temperature", "0", "--out", "run"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a tiny model gains nothing from threads; a busy CPU loses
    )
    assert result.returncode == 0, result.stderr
    out, run = result.stdout, tmp_path / "run"
    assert "Training the researcher agent of " in out and "validation on 1 questions" in out
    assert "the writer greedy, not trained" in out
    # The taught researcher looks up the training question's place: the wrong one for the validation question.
    assert (
        "researcher accuracy (trained) before training: 0.0% (0/1 looked up the question's entity; "
        "it called lookup in 1/1)" in out
    )
    assert re.search(r"researcher accuracy \(trained\) after 2 iterations: \d+\.\d% \(\d/1 looked up ", out)
    assert "writer accuracy (not trained) before training: 0.0% (0/0 right, of the questions looked up right)" in out
    # Only the researcher's calls are answered by its own adapter; the writer's by the base model.
    assert (
        f"calls answered by (after 2 iterations): researcher -> {taught_model}@researcher, writer -> {taught_model}"
        in out
    )
    assert re.search(r"whole crew \(every validation question\) before: \d+\.\d%, after 2 iterations: ", out)
    assert re.search(r"LightningRL: 100%.* 2/2 ", result.stderr)
    for line, path in (
        ("plot:", run / "metrics" / "curve.png"),
        ("metrics:", run / "metrics" / "metrics.csv"),
        ("store:", run / "runs.db"),
        ("checkpoint:", run / "checkpoint" / "latest"),
    ):
        assert line in out and str(path) in out
        assert path.exists(), path
    with (run / "metrics" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["iteration"] for row in rows] == ["1", "2"]
    assert all(row["failed_rollouts"] == "0" for row in rows)
