"""`mcp-gateway import`: Claude Desktop, VS Code and Cursor configs become gateway configs that
`check-config` accepts; prefixes from the names, clashes resolved the same way every time."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.check_config import check_config_main
from mcp_gateway.config import is_valid_prefix, parse_config
from mcp_gateway.importer import convert, derive_prefixes, render

CLI = Path(sys.executable).with_name("mcp-gateway")

CLAUDE_DESKTOP = {
    "mcpServers": {
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
        },
        "weather-api": {
            "command": "uvx",
            "args": ["weather-mcp"],
            "env": {"WEATHER_API_KEY": "wk-0123456789"},
        },
    }
}
# VS Code's .vscode/mcp.json: comments, trailing commas, `type`, input and env placeholders.
VSCODE = """{
  // prompts for the token once, VS Code stores it
  "inputs": [{"type": "promptString", "id": "gh-token", "description": "GitHub PAT", "password": true}],
  "servers": {
    "github": {
      "type": "http",
      "url": "https://api.githubcopilot.com/mcp/",
      "headers": {"Authorization": "Bearer ${input:gh-token}"},
    },
    "memory": {
      "type": "stdio",
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-memory"],
      "env": {"HOME": "${env:HOME}", "MEMORY_FILE": "/srv/memory.json"}, /* kept */
    },
  },
}"""
CURSOR = {
    "mcpServers": {
        "remote-tools": {"url": "https://tools.example.com/mcp", "headers": {"Authorization": "Bearer ct-abcdef123"}},
        "remote.tools": {"url": "https://other.example.com/mcp"},
        "local": {"command": "python", "args": ["-m", "my_server"]},
    }
}


def test_claude_desktop_stdio_servers_with_their_environment() -> None:
    result = convert(json.dumps(CLAUDE_DESKTOP))
    assert result.servers == [
        {
            "name": "filesystem",
            "transport": "stdio",
            "command": ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
            "prefix": "filesystem_",
        },
        {
            "name": "weather-api",
            "transport": "stdio",
            "command": ["uvx", "weather-mcp"],
            "env": {"WEATHER_API_KEY": "wk-0123456789"},
            "prefix": "weather_api_",
        },
    ]
    assert not any("wk-0123456789" in note for note in result.notes)  # the report shows no secret
    assert "weather-api: stdio uvx weather-mcp -> prefix weather_api_" in result.notes


def test_vscode_http_and_stdio_servers_and_what_the_client_fills_in() -> None:
    result = convert(VSCODE)
    assert result.servers == [
        {"name": "github", "transport": "http", "url": "https://api.githubcopilot.com/mcp/", "prefix": "github_"},
        {
            "name": "memory",
            "transport": "stdio",
            "command": ["npx", "-y", "@modelcontextprotocol/server-memory"],
            "env": {"MEMORY_FILE": "/srv/memory.json"},  # HOME is inherited from the gateway
            "prefix": "memory_",
        },
    ]
    assert any(n.startswith("github: Authorization left out: Bearer ${input:gh-token}") for n in result.notes)


def test_cursor_urls_with_a_credential_and_names_that_clash_as_prefixes() -> None:
    result = convert(json.dumps(CURSOR))
    assert [(s["name"], s["prefix"]) for s in result.servers] == [
        ("remote-tools", "remote_tools_"),
        ("remote.tools", "remote_tools2_"),
        ("local", "local_"),
    ]
    assert result.servers[0]["credential"] == "Bearer ct-abcdef123"
    assert result.servers[2]["command"] == ["python", "-m", "my_server"]


@pytest.mark.parametrize("source", [json.dumps(CLAUDE_DESKTOP), VSCODE, json.dumps(CURSOR)])
def test_every_import_passes_check_config(source: str, tmp_path: Path) -> None:
    imported = tmp_path / "gateway.yaml"
    imported.write_text(render(convert(source)))
    out, err = io.StringIO(), io.StringIO()
    assert check_config_main(str(imported), out, err) == 0, err.getvalue()
    assert parse_config(imported.read_text()).servers


def test_check_config_on_a_client_file_points_to_import(tmp_path: Path) -> None:
    for name, text in (("claude.json", json.dumps(CLAUDE_DESKTOP)), ("mcp.json", VSCODE)):
        client_file = tmp_path / name
        client_file.write_text(text)
        err = io.StringIO()
        assert check_config_main(str(client_file), io.StringIO(), err) == 1
        assert "`mcp-gateway import FILE` converts it" in err.getvalue()


def test_prefixes_from_names() -> None:
    assert derive_prefixes(["my-server", "GitHub Issues", "a..b", "---"]) == {
        "my-server": "my_server_",
        "GitHub Issues": "github_issues_",
        "a..b": "a_b_",
        "---": "server_",
    }
    # one stem the start of another: the shorter one gets a number, in whatever order
    for names in itertools.permutations(["gh", "gh-issues", "gh_issues"]):
        assert derive_prefixes(list(names)) == {"gh": "gh2_", "gh-issues": "gh_issues_", "gh_issues": "gh_issues2_"}


@given(st.lists(st.text(min_size=1, max_size=20), max_size=12, unique=True))
def test_derived_prefixes_are_valid_unambiguous_and_independent_of_order(names: list[str]) -> None:
    prefixes = derive_prefixes(names)
    assert all(is_valid_prefix(p) and p.endswith("_") for p in prefixes.values())
    for a, b in itertools.combinations(prefixes.values(), 2):
        assert not a.startswith(b) and not b.startswith(a)
    assert derive_prefixes(list(reversed(names))) == prefixes


def test_the_command_reports_on_stderr_and_writes_the_file(tmp_path: Path) -> None:
    source = tmp_path / "claude_desktop_config.json"
    source.write_text(json.dumps(CLAUDE_DESKTOP))
    out = tmp_path / "gateway.yaml"
    result = subprocess.run(
        [str(CLI), "import", str(source), "-o", str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "read 2 server(s)" in result.stderr and "wrote 2 server(s) to" in result.stderr
    assert "wk-0123456789" not in result.stderr
    assert parse_config(out.read_text()).server("weather-api") is not None


def test_a_file_that_is_no_client_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    source = tmp_path / "other.json"
    source.write_text('{"servers": []}')
    result = subprocess.run([str(CLI), "import", str(source)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"mcp-gateway import: {source}: no `mcpServers` (Claude Desktop, Cursor) or `servers` "
        "(VS Code) object in it\n"
    )
