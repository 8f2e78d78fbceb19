"""The config's JSON Schema: the checked-in copy is the command's output, every example passes
it, and it accepts what the loader accepts (Kuadrant's spellings) and refuses what it refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mcp_gateway.config import ConfigError, parse_config
from mcp_gateway.config_schema import SCHEMA_FILE, config_schema, schema_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CLI = Path(sys.executable).with_name("mcp-gateway")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_checked_in_schema_is_what_the_command_prints() -> None:
    printed = subprocess.run(
        [str(CLI), "schema"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert printed == schema_text()
    assert (ROOT / SCHEMA_FILE).read_text() == printed, (
        f"{SCHEMA_FILE} is out of date: run `mcp-gateway schema > {SCHEMA_FILE}`"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_every_example_names_the_schema_and_passes_it(
    example: Path, validator: jsonschema.Draft202012Validator
) -> None:
    first_line = example.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schema/config.schema.json"
    assert (example.parent / "../schema/config.schema.json").resolve() == ROOT / SCHEMA_FILE
    validator.validate(yaml.safe_load(example.read_text()))


def _errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return [error.message for error in validator.iter_errors(document)]


ACCEPTED_BY_BOTH = [
    # Kuadrant's older spellings, a null key inside an entry, null sections and lists
    {"servers": [{"name": "a", "url": "http://a/mcp", "toolPrefix": "a_", "enabled": False, "hint": None}]},
    {"servers": None, "virtualServers": [{"name": "v", "tools": None}], "gateway": None},
    {"servers": [{"name": "s", "transport": "stdio", "command": "uvx my-server --flag 'a b'"}]},
    {"servers": [{"name": "k", "url": "http://k/mcp", "category": ["x", "y"], "state": ""}]},
]
REFUSED_BY_BOTH = [
    {"servers": [{"name": "a", "url": "http://a/mcp", "prefx": "a_"}]},  # a typo
    {"servers": [{"name": "a", "url": "http://a/mcp", "state": "enabled"}]},  # case matters
    {"gateway": {"page_size": "100"}},  # strict types
    {"servers": {"a": {"command": "npx"}}},  # an MCP client's shape
    {"mcpServers": {"a": {"command": "npx"}}},
]


@pytest.mark.parametrize("document", ACCEPTED_BY_BOTH)
def test_the_schema_accepts_what_the_loader_accepts(
    document: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    parse_config(json.dumps(document))
    assert _errors(validator, document) == []


@pytest.mark.parametrize("document", REFUSED_BY_BOTH)
def test_the_schema_refuses_what_the_loader_refuses(
    document: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    with pytest.raises(ConfigError):
        parse_config(json.dumps(document))
    assert _errors(validator, document)
