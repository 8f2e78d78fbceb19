"""The config file's JSON Schema (`mcp-gateway schema`), from the pydantic models in config/.

pydantic describes what the models take once the loader has prepared the data; a file may say
more than that, and the schema must accept every file `check-config` accepts, or an editor would
flag a valid file. So the generated schema is widened where the loader is: Kuadrant's older
`toolPrefix` beside `prefix`, a `command` given as one shell-quoted string, `key: null` inside a
server entry (Go's YAML zero value) and for a whole section. It stays as strict as the loader
everywhere else: unknown keys are refused (`additionalProperties: false`).

The schema cannot check what spans entries (unique names, overlapping prefixes) or needs the
environment (`credentialEnvVar`): `check-config` does. `schema/config.schema.json` is this
module's output, checked in for editors (a test keeps the two equal).
"""

from __future__ import annotations

import json
from typing import Any

from mcp_gateway.config import GatewayConfig

__all__ = ["SCHEMA_FILE", "config_schema", "schema_text"]

# Where the checked-in copy lives, relative to the repository root; examples point at it.
SCHEMA_FILE = "schema/config.schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NULL: dict[str, Any] = {"type": "null"}


def config_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = schema["$defs"]
    for definition in [schema, *definitions.values()]:
        for prop in definition.get("properties", {}).values():
            prop.pop("title", None)  # pydantic's `Cacert`, `Timeoutseconds`: noise in an editor
    server = definitions["ServerConfig"]["properties"]
    server["command"] = {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string", "description": "split like a shell would: \"uvx server --flag 'a b'\""},
        ],
        "description": "transport stdio: the program and its arguments",
    }
    server["category"] = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    server["state"] = {"enum": ["Enabled", "Disabled", ""], "default": "Enabled"}
    server["toolPrefix"] = {**server["prefix"], "description": "the old name of `prefix` (read as `prefix`)"}
    for name, prop in server.items():
        server[name] = _nullable(prop)  # the loader drops `key: null` in a server entry
    for section in ("servers", "virtualServers", "gateway"):
        schema["properties"][section] = _nullable(schema["properties"][section])
    virtual = definitions["VirtualServer"]["properties"]
    for name in ("tools", "prompts", "resources"):
        virtual[name] = _nullable(virtual[name])  # Go's writer emits `tools: null`
    return {
        "$schema": _DIALECT,
        "title": "mcp-gateway config",
        "description": "The gateway config file: Kuadrant mcp-gateway's config.yaml plus the "
        "`gateway:` section (docs/configuration.md). `mcp-gateway check-config FILE` also checks "
        "what a schema cannot: unique names, unambiguous prefixes, environment variables.",
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    variants = prop.get("anyOf")
    if variants is not None:
        return prop if _NULL in variants else {**prop, "anyOf": [*variants, _NULL]}
    annotations = {k: v for k, v in prop.items() if k in ("default", "description")}
    shape = {k: v for k, v in prop.items() if k not in annotations}
    return {"anyOf": [shape, _NULL], **annotations}


def schema_text() -> str:
    """The schema as `mcp-gateway schema` prints it and `schema/config.schema.json` holds it."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
