"""The `mcp-gateway` command: one subcommand per box of the design, each a thin call."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

DEFAULT_CONFIG = "examples/config.yaml"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description=__doc__)
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the broker and/or the ext_proc router")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="gateway config file (watched)")
    serve.add_argument("--role", choices=("all", "broker", "router"), default="all")

    up = commands.add_parser(
        "up", help="start Envoy, the gateway and the sample servers on loopback"
    )
    up.add_argument("--config", default=DEFAULT_CONFIG)

    controller = commands.add_parser("controller", help="run the Kubernetes discovery controller")
    controller.add_argument("--namespace", default="mcp-system", help="where the Secret lives")
    controller.add_argument("--secret-name", default="mcp-gateway-config")
    controller.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True)
    controller.add_argument("--identity", default=None, help="leader-election identity (pod name)")
    controller.add_argument("--kubeconfig", default=None)
    controller.add_argument(
        "--health-listen",
        default=None,
        help="host:port of /healthz and /readyz (default 0.0.0.0:8082, or "
        "$MCP_GATEWAY_CONTROLLER_HEALTH_LISTEN)",
    )

    sample = commands.add_parser("sample-server", help="run one of the sample MCP servers")
    sample.add_argument("name")
    sample.add_argument("--host", default="127.0.0.1")
    sample.add_argument("--port", type=int, required=True)

    check = commands.add_parser("check-config", help="validate a config file; list every problem")
    check.add_argument("file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command in ("serve", "up", "controller", "sample-server"):
        # Long-running commands log structured lines; check-config prints for a human only.
        from mcp_gateway.logs import configure_logging

        configure_logging(args.log_level)
    # Imports are local so that `check-config` does not pay for Envoy, gRPC or Kubernetes.
    if args.command == "check-config":
        from mcp_gateway.config import check_config_main

        return check_config_main(args.file)
    if args.command == "serve":
        from mcp_gateway.serve import run_serve

        return run_serve(args.config, args.role)
    if args.command == "up":
        from mcp_gateway.launcher import run_up

        return run_up(args.config)
    if args.command == "controller":
        from mcp_gateway.controller.main import run_controller

        return run_controller(args)
    if args.command == "sample-server":
        from mcp_gateway.samples import run_sample

        return run_sample(args.name, args.host, args.port)
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
