from typing import Any

from mcp_gateway.upstream.catalog import (
    PROMPTS,
    RESOURCES,
    TOOLS,
    accept_items,
    announces_list_changed,
    offered_kinds,
    validate_initialize,
)

OBJECT_SCHEMA = {"type": "object", "properties": {}}


def test_a_supported_revision_with_tools_is_usable() -> None:
    result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": True}}}
    assert validate_initialize(result) == []
    assert offered_kinds(result) == (TOOLS,)
    assert announces_list_changed(result, TOOLS)


def test_an_unknown_revision_and_no_capabilities_are_both_reported() -> None:
    problems = validate_initialize({"protocolVersion": "1999-01-01", "capabilities": {}})
    assert problems == [
        "unsupported protocol revision '1999-01-01'",
        "offers none of tools, prompts, resources",
    ]


def test_a_server_with_only_prompts_and_resources_is_federated_for_those() -> None:
    result = {"protocolVersion": "2025-06-18", "capabilities": {"prompts": {}, "resources": {}}}
    assert validate_initialize(result) == []
    assert [k.kind for k in offered_kinds(result)] == ["prompts", "resources", "resource_templates"]


def test_invalid_tools_are_rejected_with_a_reason_and_the_rest_kept() -> None:
    items: list[dict[str, Any]] = [
        {"name": "good", "inputSchema": OBJECT_SCHEMA},
        {"name": "has space", "inputSchema": OBJECT_SCHEMA},
        {"name": "no_schema"},
        {"name": "array_schema", "inputSchema": {"type": "array"}},
        {"name": "good", "inputSchema": OBJECT_SCHEMA},
        {"inputSchema": OBJECT_SCHEMA},
    ]
    accepted, rejected = accept_items(TOOLS, items)
    assert [t["name"] for t in accepted] == ["good"]
    assert [(r.item, r.reason) for r in rejected] == [
        ("tools:has space", "invalid tool name"),
        ("tools:no_schema", "inputSchema is not an object schema"),
        ("tools:array_schema", "inputSchema is not an object schema"),
        ("tools:good", "duplicate name"),
        ("tools:?", "missing name"),
    ]


def test_prompts_and_resources_are_keyed_by_their_own_identity_field() -> None:
    assert accept_items(PROMPTS, [{"name": "p"}])[0] == ({"name": "p"},)
    accepted, rejected = accept_items(RESOURCES, [{"uri": "file:///a"}, {"name": "no uri"}])
    assert accepted == ({"uri": "file:///a"},)
    assert rejected[0].reason == "missing uri"


def test_a_name_that_would_be_too_long_with_its_prefix_is_rejected() -> None:
    long_name = "t" * 120
    items = [{"name": long_name, "inputSchema": {"type": "object"}}]
    assert accept_items(TOOLS, items)[0] != ()
    accepted, rejected = accept_items(TOOLS, items, "a_much_too_long_prefix_")
    assert accepted == ()
    assert rejected[0].reason.startswith("name longer than 128")
