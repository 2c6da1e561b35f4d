"""Starting, attaching, failing clearly, and leaving no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from agentlightning_engine import EngineError, ModelNotFound, VLLMEngine
from conftest import MODEL_NAME, TinyModels, group_is_gone


def test_importing_the_package_does_not_import_vllm() -> None:
    code = "import sys, agentlightning_engine; print('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_model_folder_that_does_not_exist_fails_before_anything_starts(tmp_path: Path) -> None:
    engine = VLLMEngine(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFound, match="no-such-model"):
        engine.start()
    assert engine.process is None


def test_a_server_that_dies_while_starting_fails_with_the_end_of_its_log(tiny_models: TinyModels) -> None:
    engine = VLLMEngine(tiny_models.base, extra_args=["--no-such-flag"], startup_timeout=120)
    with pytest.raises(EngineError, match="exited with code") as failure:
        engine.start()
    assert "--no-such-flag" in str(failure.value)  # vLLM's own complaint, from its log
    assert engine.process is None and engine.pid is not None and group_is_gone(engine.pid)
    assert engine.log_path is not None and engine.log_path.is_file()  # kept for reading
    engine.log_path.unlink()


def test_a_server_that_does_not_answer_in_time_is_ended_with_its_process_group(tiny_models: TinyModels) -> None:
    engine = VLLMEngine(tiny_models.base, startup_timeout=1)
    with pytest.raises(EngineError, match="raise startup_timeout"):
        engine.start()
    assert engine.process is None and engine.pid is not None and group_is_gone(engine.pid)
    assert engine.log_path is not None
    engine.log_path.unlink()


def test_the_server_runs_in_its_own_process_group_with_its_engine_processes(engine: VLLMEngine) -> None:
    # close() ends this group; the session's engine fixture checks that nothing of it is left afterwards
    assert engine.process is not None and os.getpgid(engine.process.pid) == engine.process.pid
    children = subprocess.run(
        ["ps", "-o", "pid=", "-s", str(engine.process.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(children) >= 2  # the API server and vLLM's engine core, all in the group close() ends


def test_attach_wraps_a_running_server_and_leaves_it_running(engine: VLLMEngine) -> None:
    attached = VLLMEngine.attach(engine.url)
    assert attached.model_name == MODEL_NAME and attached.url == engine.url and attached.process is None
    with attached:
        response = httpx.post(
            f"{attached.url}/chat/completions",
            json={"model": attached.model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )
        assert response.status_code == 200
    assert httpx.get(engine.url.removesuffix("/v1") + "/health", timeout=10).status_code == 200


def test_attach_to_nothing_fails_clearly() -> None:
    with pytest.raises(EngineError, match="did not answer within 1 s"):
        VLLMEngine.attach("http://127.0.0.1:9/v1", timeout=1)


def test_the_server_only_listens_on_loopback() -> None:
    with pytest.raises(EngineError, match="attach"):
        VLLMEngine(host="0.0.0.0")


def test_lora_calls_need_enable_lora() -> None:
    with pytest.raises(EngineError, match="enable_lora=True"):
        VLLMEngine().load_lora("adapter", "/tmp")
