"""The ``agl`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

DEFAULT_STORE = "sqlite:///runs.db"


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=os.environ.get("AGL_STORE", DEFAULT_STORE),
        help="store URL: sqlite:///runs.db, memory:// or http://host:port (default: $AGL_STORE or %(default)s)",
    )
    parser.add_argument(
        "--token", default=os.environ.get("AGL_STORE_TOKEN"), help="token of a store server ($AGL_STORE_TOKEN)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``agl``."""
    from agentlightning.cli import gateway, runner, runs, store

    parser = argparse.ArgumentParser(
        prog="agl",
        description="Agent Lightning: train the LLMs inside your agents.",
        epilog="Installed packages add commands: `agl engine serve` with agentlightning-engine.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    store_parser = commands.add_parser("store", help="run a store server")
    store_commands = store_parser.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    serve = store_commands.add_parser("serve", help="serve a store over HTTP (REST and OTLP)")
    _store_arguments(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; others need --token)"
    )
    serve.add_argument("--port", type=int, default=4747, help="port (default: %(default)s)")
    serve.add_argument(
        "--max-body-mb", type=float, default=64, help="largest request body in MiB (default: %(default)s)"
    )
    serve.set_defaults(handler=store.serve)

    gateway_parser = commands.add_parser("gateway", help="record every LLM call of the agents, with token ids")
    _store_arguments(gateway_parser)
    gateway_parser.add_argument(
        "--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    gateway_parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    gateway_parser.add_argument("--port", type=int, default=4748, help="port (default: %(default)s)")
    gateway_parser.add_argument("--upstream-api-key", default=None, help="API key sent to the upstream")
    gateway_parser.add_argument(
        "--no-token-ids", action="store_true", help="do not ask the upstream for token ids (hosted APIs reject it)"
    )
    gateway_parser.set_defaults(handler=gateway.serve)

    runner_parser = commands.add_parser("runner", help="run an agent's rollouts from a store")
    _store_arguments(runner_parser)
    runner_parser.add_argument(
        "--agent", required=True, help="module:attribute of an @agl.rollout function or agl.LitAgent"
    )
    runner_parser.add_argument("--concurrency", type=int, help="rollouts at once (default: 256 async agents, 1 sync)")
    runner_parser.add_argument("--max-rollouts", type=int, help="stop after this many rollouts")
    runner_parser.add_argument("--worker-id", help="name of this runner in the store (default: host-pid)")
    runner_parser.set_defaults(handler=runner.run)

    runs_parser = commands.add_parser("runs", help="look at rollouts")
    runs_commands = runs_parser.add_subparsers(dest="runs_command", required=True, metavar="SUBCOMMAND")
    listing = runs_commands.add_parser("list", help="a table of rollouts with status and reward")
    _store_arguments(listing)
    listing.add_argument("--status", action="append", help="only rollouts in this status (repeatable)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many, newest first (default: %(default)s)")
    listing.set_defaults(handler=runs.list_runs)
    show = runs_commands.add_parser("show", help="one rollout: its attempts and span tree")
    _store_arguments(show)
    show.add_argument("rollout_id")
    show.set_defaults(handler=runs.show_run)

    integrations_parser = commands.add_parser("integrations", help="list the installed agent-framework integrations")
    integrations_parser.set_defaults(handler=_list_integrations)
    return parser


def _list_integrations(args: argparse.Namespace) -> int:
    from agentlightning.integrations import installed_integrations

    found = installed_integrations()
    if not found:
        print("No integrations installed. Install one, e.g. `pip install agentlightning-langchain`.")
    for integration in found:
        print(f"{integration.name:<16} {integration.distribution} {integration.version}  ({integration.target})")
    return 0


#: Entry-point group of the commands other packages add to ``agl``: name -> ``module:main``, where
#: ``main(argv, prog)`` runs the command with the arguments after its name and returns the exit code.
COMMANDS_GROUP = "agentlightning.commands"
#: Commands that come with a package of the project, for a helpful error when it is not installed.
_PACKAGE_COMMANDS = {"engine": "agentlightning-engine"}


def _package_command(name: str) -> Callable[[list[str], str], int] | None:
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=COMMANDS_GROUP, name=name):
        command: Callable[[list[str], str], int] = entry_point.load()
        return command
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agl``; returns the exit code."""
    from agentlightning.errors import AgentLightningError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        command = _package_command(argv[0])
        if command is not None:
            return command(argv[1:], f"agl {argv[0]}")
        if argv[0] in _PACKAGE_COMMANDS:
            package = _PACKAGE_COMMANDS[argv[0]]
            print(f"agl: `agl {argv[0]}` comes with {package}: pip install {package}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except AgentLightningError as exc:
        print(f"agl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
