"""``agl store serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from agentlightning.server.serve import StoreServer
from agentlightning.store import open_store


def serve(args: argparse.Namespace) -> int:
    """Serve the store named by ``--store`` until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.store.startswith(("http://", "https://")):
        raise SystemExit("agl: error: --store must be a local store (sqlite:///... or memory://), not another server")
    store = open_store(args.store)
    server = StoreServer(
        store, host=args.host, port=args.port, token=args.token, max_body_bytes=int(args.max_body_mb * 2**20)
    )
    print(f"Serving {args.store} at {server.url} (REST under /api/v1, OTLP at /v1/traces). Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    finally:
        asyncio.run(store.close())
    return 0
