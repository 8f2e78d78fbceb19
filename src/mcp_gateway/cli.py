"""The `mcp-gateway` command: one subcommand per box of the design, each a thin call."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_gateway.config import ConfigError

CONFIG_ENV = "MCP_GATEWAY_CONFIG"
LOG_LEVEL_ENV = "LOG_LEVEL"
DEFAULT_CONFIG = "examples/config.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")
# The bundled samples (`mcp_gateway.samples.SAMPLES`; a unit test keeps the two equal). Written
# out here because importing the samples loads the MCP SDK: 1.5 s on every `--help`.
SAMPLE_DESCRIPTIONS = {
    "echo": "two trivial tools (echo, add)",
    "dynamic": "a tool set that changes at runtime (add_tool, remove_tool): list_changed",
    "slow": "tools that take their time and report progress",
    "many": "150 tools ($MCP_SAMPLE_TOOLS), for pagination",
    "conformance": "the MCP conformance suite's fixture: every feature of the protocol",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mcp-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _default_log_level() -> str:
    return os.environ.get(LOG_LEVEL_ENV, "").strip().lower() or "info"


def _global_options(*, suppress_defaults: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (`mcp-gateway serve --log-level
    debug` and `mcp-gateway --log-level debug serve` mean the same). The copy each subcommand
    gets has no default, so it never overwrites a value given before the subcommand."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS if suppress_defaults else _default_log_level(),
        help=f"how much to log (default: ${LOG_LEVEL_ENV}, else info); logs go to stderr, "
        "one JSON object a line unless stderr is a terminal",
    )
    return options


def _config_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG,
        help=f"{what} (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-gateway", description=__doc__, parents=[_global_options(suppress_defaults=False)]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = [_global_options(suppress_defaults=True)]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=common, **kwargs)

    serve = command("serve", "run the broker and/or the ext_proc router")
    _config_option(serve, "gateway config file; watched and reloaded when it changes")
    serve.add_argument(
        "--role",
        choices=("all", "broker", "router"),
        default="all",
        help="run both services in this process (all, the default) or only one of them",
    )

    up = command("up", "start Envoy, the gateway and the sample servers on loopback")
    _config_option(up, "gateway config file; its loopback sample servers are started too")

    controller = command("controller", "run the Kubernetes discovery controller")
    controller.add_argument(
        "--namespace", default="mcp-system", help="namespace of the config Secret (default: %(default)s)"
    )
    controller.add_argument(
        "--secret-name",
        default="mcp-gateway-config",
        help="name of the Secret the controller writes the config into (default: %(default)s)",
    )
    controller.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take a Lease before writing, so only one replica acts (default: on)",
    )
    controller.add_argument(
        "--identity", default=None, help="leader-election identity (default: the pod or host name)"
    )
    controller.add_argument(
        "--kubeconfig",
        default=None,
        metavar="FILE",
        help="kubeconfig to use (default: the in-cluster account, else $KUBECONFIG or ~/.kube/config)",
    )
    controller.add_argument(
        "--health-listen",
        default=None,
        metavar="HOST:PORT",
        help="host:port of /healthz and /readyz (default 0.0.0.0:8082, or "
        "$MCP_GATEWAY_CONTROLLER_HEALTH_LISTEN)",
    )

    names = "\n".join(f"  {name:<12} {what}" for name, what in SAMPLE_DESCRIPTIONS.items())
    sample = command(
        "sample-server",
        "run one of the sample MCP servers",
        epilog=f"samples:\n{names}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sample.add_argument(
        "name", choices=tuple(SAMPLE_DESCRIPTIONS), metavar="NAME", help="which sample (listed below)"
    )
    sample.add_argument(
        "--transport",
        choices=("http", "stdio"),
        default="http",
        help="http: Streamable HTTP at http://HOST:PORT/mcp (default); stdio: MCP on stdin/stdout, "
        "as a client such as Claude Desktop runs a server",
    )
    sample.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    sample.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to listen on; 0 picks a free one; the URL is printed once listening "
        "(required for http)",
    )

    check = command(
        "check-config", "validate a config file; list every problem with its path and line"
    )
    check.add_argument(
        "file",
        nargs="?",
        default=os.environ.get(CONFIG_ENV) or None,
        help=f"the config file (default: ${CONFIG_ENV})",
    )

    command("schema", "print the config file's JSON Schema (for editors and CI)")

    importer = command(
        "import",
        "convert a Claude Desktop, VS Code or Cursor MCP config into a gateway config",
        epilog="Reads `mcpServers` (Claude Desktop's claude_desktop_config.json, Cursor's "
        "mcp.json) or `servers` (VS Code's .vscode/mcp.json). What was converted, changed or "
        "left out is reported on stderr.",
    )
    importer.add_argument("file", metavar="FILE", help="the MCP client's config (JSON)")
    importer.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        help="write the gateway config here (default: standard output)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if _default_log_level() not in LOG_LEVELS:
        parser.error(
            f"${LOG_LEVEL_ENV} is {os.environ[LOG_LEVEL_ENV]!r}; use one of {', '.join(LOG_LEVELS)}"
        )
    args = parser.parse_args(argv)
    # Every command logs at the chosen level; what a command prints for a human (check-config,
    # schema, import) goes to stdout or stderr as plain text, not through the logs.
    from mcp_gateway.logs import configure_logging

    configure_logging(args.log_level)
    try:
        return _run(parser, args)
    except BrokenPipeError:
        # The reader went away (`mcp-gateway schema | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Imports are local so that `check-config` does not pay for Envoy, gRPC or Kubernetes.
    if args.command == "check-config":
        if args.file is None:
            parser.error(f"check-config needs a FILE (or ${CONFIG_ENV})")
        from mcp_gateway.check_config import check_config_main

        return check_config_main(args.file)
    if args.command == "serve":
        from mcp_gateway.serve import run_serve

        return _run_with_config("serve", args.config, lambda: run_serve(args.config, args.role))
    if args.command == "up":
        from mcp_gateway.launcher import run_up

        return _run_with_config("up", args.config, lambda: run_up(args.config))
    if args.command == "controller":
        from mcp_gateway.controller.main import run_controller

        return run_controller(args)
    if args.command == "sample-server":
        from mcp_gateway.samples import run_sample

        if args.transport == "http" and args.port is None:
            parser.error("sample-server needs --port for http (0 picks a free port)")
        return run_sample(args.name, args.host, args.port or 0, transport=args.transport)
    if args.command == "schema":
        from mcp_gateway.config_schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    if args.command == "import":
        from mcp_gateway.importer import import_main

        return import_main(args.file, args.output)
    raise AssertionError(f"unhandled command {args.command!r}")


def _run_with_config(command: str, path: str, run: Callable[[], int]) -> int:
    """Load the config before anything starts, so a bad or missing file is one line on stderr
    and exit 2, not a traceback out of a nursery; a failure to start (a port in use) that comes
    out of the nurseries later is one line too."""
    from mcp_gateway.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as error:
        print(f"mcp-gateway {command}: {config_error_line(error)}", file=sys.stderr)
        return 2
    try:
        return run()
    except (ConfigError, OSError, BaseExceptionGroup) as error:
        leaf = _only_leaf(error)
        if isinstance(leaf, ConfigError):
            print(f"mcp-gateway {command}: {config_error_line(leaf)}", file=sys.stderr)
            return 2
        if isinstance(leaf, OSError):
            print(f"mcp-gateway {command}: cannot start: {leaf}", file=sys.stderr)
            return 1
        raise


def config_error_line(error: ConfigError) -> str:
    """A `ConfigError` in one line: the file, its first problem, how many more and how to see
    them all."""
    first, more = error.problems[0], len(error.problems) - 1
    line = f"{error.source}: {first}"
    if more:
        line += f" (and {more} more: `mcp-gateway check-config {error.source}` lists them)"
    return line


def _only_leaf(error: BaseException) -> BaseException | None:
    """The one exception inside (nested) groups, or None when there are several."""
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


if __name__ == "__main__":
    sys.exit(main())
