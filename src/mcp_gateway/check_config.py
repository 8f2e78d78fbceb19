"""`mcp-gateway check-config FILE`: every problem with its path and line, or a summary of what
the file configures and its warnings. Exit code 0 (valid) or 1."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from typing import TextIO

from mcp_gateway.config import ConfigError, GatewayConfig, config_warnings, parse_config
from mcp_gateway.config._checks import shown_url
from mcp_gateway.config._loader import line_of, read_config_text, read_yaml


def check_config_main(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        text = read_config_text(path)
        config = parse_config(text, path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return 1
    print(_summary(path, config), file=out)
    _, root, _ = read_yaml(text)
    for warning in config_warnings(config):
        print(f"warning: {replace(warning, line=line_of(root, warning.path))}", file=out)
    return 0


def _summary(path: str, config: GatewayConfig) -> str:
    header = ("NAME", "PREFIX", "URL", "TRANSPORT", "STATE")
    rows = [
        (
            server.name,
            server.prefix or '""',
            shown_url(server.url) or " ".join(shlex.quote(arg) for arg in server.command or []),
            server.transport,
            server.state_name,
        )
        for server in config.servers
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{path}: valid, {len(config.servers)} server(s), "
             f"{len(config.enabled_servers())} enabled, {len(config.virtual_servers)} virtual server(s)"]
    if rows:
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                  for row in [header, *rows]]
    settings = config.gateway
    lines.append(
        f"envoy {settings.envoy.listen}  broker {settings.broker_listen}  "
        f"router {settings.router_listen}  admin {settings.admin_listen}  "
        f"sessions {settings.sessions.store}"
    )
    return "\n".join(lines)


__all__ = ["check_config_main"]
