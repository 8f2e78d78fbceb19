"""`mcp-gateway import FILE`: an MCP client's server list as a gateway config.

Reads the files people already have: Claude Desktop's `claude_desktop_config.json` and Cursor's
`mcp.json` (`mcpServers: {name: {command, args, env} | {url, headers}}`) and VS Code's
`.vscode/mcp.json` (`servers: {name: {type: stdio|http|sse, ...}}`, comments allowed; also a
settings file's `mcp: {servers: ...}`). Each server becomes a `servers:` entry: stdio ones run by
the gateway (`transport: stdio`, `command`, `env`), HTTP ones reached at their `url` (an
`Authorization` header becomes the `credential`). Prefixes come from the names (`my-server` ->
`my_server_`); clashes are resolved the same way every time. What could not be carried over is
said, never dropped silently.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from mcp_gateway.config import ConfigError, ServerConfig, parse_config

__all__ = ["ImportResult", "convert", "derive_prefixes", "import_main", "read_client_config"]

_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")  # VS Code's ${input:x}, ${env:X}, ${workspaceFolder}
_ENV_PLACEHOLDER_RE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._:/@-]+")
_PREFIX_UNSAFE_RE = re.compile(r"[^a-z0-9]+")
_PREFIX_STEM_MAX = 60  # prefixes stay short: every tool name of the server starts with one


@dataclass
class ImportResult:
    """The gateway config (plain data, file shape) and what the conversion did, line by line."""

    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def servers(self) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = self.document["servers"]
        return servers


def read_client_config(text: str) -> tuple[str, Mapping[str, Any]]:
    """(which client's shape, its map of server name to entry); ValueError if it is neither."""
    try:
        data = json.loads(_strip_jsonc(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, Mapping):
        raise ValueError("expected a JSON object with `mcpServers` or `servers`")
    if isinstance(data.get("mcp"), Mapping):  # VS Code's user settings.json
        data = data["mcp"]
    for key, shape in (("mcpServers", "Claude Desktop / Cursor"), ("servers", "VS Code")):
        servers = data.get(key)
        if isinstance(servers, Mapping):
            return shape, servers
    raise ValueError(
        "no `mcpServers` (Claude Desktop, Cursor) or `servers` (VS Code) object in it"
    )


def _strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (VS Code's mcp.json) as plain JSON."""
    out: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == '"':
            end = index + 1
            while end < length and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[index : end + 1])
            index = end + 1
        elif text.startswith("//", index):
            newline = text.find("\n", index)
            index = length if newline < 0 else newline
        elif text.startswith("/*", index):
            close = text.find("*/", index + 2)
            index = length if close < 0 else close + 2
        else:
            out.append(char)
            index += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def derive_prefixes(names: list[str]) -> dict[str, str]:
    """A prefix per name: lower case, runs of other characters as one `_`, then `_`
    (`My-Server` -> `my_server_`). No prefix equals another or starts another (the router maps
    a tool name to its server by prefix), whatever the order of the names: longer stems choose
    first, and a stem that is taken, or is the start of one taken, gets a number (`gh2_`)."""
    stems = {name: _PREFIX_UNSAFE_RE.sub("_", name.lower()).strip("_")[:_PREFIX_STEM_MAX] or "server" for name in names}
    chosen: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (-len(stems[n]), stems[n], n)):
        stem, number = stems[name], 1
        prefix = f"{stem}_"
        while any(prefix.startswith(p) or p.startswith(prefix) for p in chosen.values()):
            number += 1
            prefix = f"{stem}{number}_"
        chosen[name] = prefix
    return {name: chosen[name] for name in names}


def convert(text: str) -> ImportResult:
    """The gateway config for an MCP client's config text; ValueError if it is not one."""
    shape, entries = read_client_config(text)
    notes = [f"read {len(entries)} server(s) in {shape}'s shape"]
    names = _unique_names(list(entries), notes)
    prefixes = derive_prefixes(list(names.values()))
    servers = []
    for original, entry in entries.items():
        name = names[original]
        server = _server(name, prefixes[name], entry, notes)
        if server is not None:
            servers.append(server)
    return ImportResult({"servers": servers}, notes)


def _unique_names(originals: list[str], notes: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for original in originals:
        name = _NAME_UNSAFE_RE.sub("-", original).strip("-._:/@") or "server"
        base, number = name, 1
        while name in names.values():
            number += 1
            name = f"{base}-{number}"
        if name != original:
            notes.append(f"{original!r}: named {name!r} (server names are A-Z a-z 0-9 . _ : / @ -)")
        names[original] = name
    return names


def _server(name: str, prefix: str, entry: Any, notes: list[str]) -> dict[str, Any] | None:
    if not isinstance(entry, Mapping):
        notes.append(f"{name}: skipped: its entry is not an object")
        return None
    kind = entry.get("type")
    if "command" in entry:
        server = _stdio_server(name, entry, notes)
    elif "url" in entry or "serverUrl" in entry:
        server = _http_server(name, entry, notes)
    else:
        notes.append(f"{name}: skipped: neither a `command` (stdio) nor a `url` (HTTP)")
        return None
    if server is None:
        return None
    if kind not in (None, "stdio", "http", "streamable-http", "streamableHttp", "sse", "ws"):
        notes.append(f"{name}: type {kind!r} is unknown here; read as {server['transport']}")
    server["prefix"] = prefix
    if entry.get("disabled") is True or entry.get("enabled") is False:
        server["state"] = "Disabled"
    ignored = sorted(set(entry) - _USED_KEYS)
    if ignored:
        notes.append(f"{name}: not carried over: {', '.join(ignored)} (the gateway has no such setting)")
    try:
        ServerConfig.model_validate({**server, "credentialEnvVar": None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        notes.append(f"{name}: skipped: {problems}")
        return None
    where = " ".join(server["command"]) if server["transport"] == "stdio" else server["url"]
    notes.append(f"{name}: {server['transport']} {where} -> prefix {prefix}")
    return server


_USED_KEYS = frozenset({"type", "command", "args", "env", "url", "serverUrl", "headers", "disabled", "enabled"})


def _stdio_server(name: str, entry: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    command, args = entry.get("command"), entry.get("args") or []
    if not isinstance(command, str) or not command or not isinstance(args, list):
        notes.append(f"{name}: skipped: `command` must be a string and `args` a list")
        return None
    argv = [command, *(str(arg) for arg in args)]
    if any(_PLACEHOLDER_RE.search(arg) for arg in argv):
        notes.append(f"{name}: its command has ${{...}} placeholders the gateway does not expand")
    server: dict[str, Any] = {"name": name, "transport": "stdio", "command": argv}
    env = _env(name, entry.get("env"), notes)
    if env:
        server["env"] = env
        notes.append(f"{name}: environment {', '.join(sorted(env))} copied (values kept out of this report)")
    return server


def _env(name: str, given: Any, notes: list[str]) -> dict[str, str]:
    if not isinstance(given, Mapping):
        return {}
    env: dict[str, str] = {}
    for key, value in given.items():
        text = str(value)
        same = _ENV_PLACEHOLDER_RE.fullmatch(text)
        if same and same.group(1) == key:
            continue  # the server inherits the gateway's environment: set it there
        if _PLACEHOLDER_RE.search(text):
            notes.append(f"{name}: env {key} left out: {text} is filled in by the client, not here; set {key} in the gateway's environment")
            continue
        env[str(key)] = text
    return env


def _http_server(name: str, entry: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
    url = entry.get("url", entry.get("serverUrl"))
    if not isinstance(url, str):
        notes.append(f"{name}: skipped: `url` is not a string")
        return None
    transport = "websocket" if url.startswith(("ws://", "wss://")) else "http"
    server: dict[str, Any] = {"name": name, "transport": transport, "url": url}
    if entry.get("type") == "sse" or url.rstrip("/").endswith("/sse"):
        notes.append(
            f"{name}: looks like the older HTTP+SSE transport; the gateway speaks Streamable HTTP, "
            "so point url at the server's Streamable HTTP endpoint if it has one"
        )
    headers = entry.get("headers")
    for header, value in (headers.items() if isinstance(headers, Mapping) else ()):
        text = str(value)
        if header.lower() != "authorization":
            notes.append(f"{name}: header {header} left out: the gateway sends only Authorization (`credential`)")
        elif (from_env := _ENV_PLACEHOLDER_RE.fullmatch(text)) is not None:
            server["credentialEnvVar"] = from_env.group(1)
            notes.append(f"{name}: Authorization read from ${from_env.group(1)} (set it where the gateway runs)")
        elif _PLACEHOLDER_RE.search(text):
            notes.append(f"{name}: Authorization left out: {text} is filled in by the client; set `credentialEnvVar`")
        else:
            server["credential"] = text
            notes.append(f"{name}: Authorization copied as its credential (kept out of this report)")
    return server


def render(result: ImportResult) -> str:
    """The config as YAML, saying where it came from."""
    body = yaml.safe_dump(result.document, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "# Written by `mcp-gateway import`; every key is described in docs/configuration.md.\n" + body


def import_main(path: str, output: str | None) -> int:
    """`mcp-gateway import FILE [-o OUT]`: 0 written, 1 nothing usable in it, 2 unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        result = convert(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"mcp-gateway import: {path}: {reason}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"  {note}", file=sys.stderr)
    rendered = render(result)
    try:
        parse_config(rendered, "the imported config")
    except ConfigError as exc:
        # Only a variable named by credentialEnvVar that is not set here can get this far.
        print(f"  note: {'; '.join(str(p) for p in exc.problems)}", file=sys.stderr)
    if output is None:
        sys.stdout.write(rendered)
    else:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(rendered)
    where = "standard output" if output is None else output
    print(f"wrote {len(result.servers)} server(s) to {where}; check it with `mcp-gateway check-config`", file=sys.stderr)
    return 0 if result.servers else 1
