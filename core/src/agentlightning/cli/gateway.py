"""``agl gateway``: run the LLM gateway in front of an OpenAI-compatible upstream."""

from __future__ import annotations

import argparse
import asyncio
import logging

from agentlightning.gateway import Gateway
from agentlightning.store import open_store


def serve(args: argparse.Namespace) -> int:
    """Serve the gateway until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = open_store(args.store, token=args.token)
    gateway = Gateway(
        args.upstream,
        store,
        host=args.host,
        port=args.port,
        request_token_ids=not args.no_token_ids,
        upstream_api_key=args.upstream_api_key,
    )
    print(f"Gateway at {gateway.url} -> {args.upstream}, recording into {args.store}. Ctrl-C to stop.", flush=True)
    try:
        gateway.serve_forever()
    finally:
        asyncio.run(store.close())
    return 0
