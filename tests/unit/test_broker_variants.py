"""Capability variants in the federation (pure): which client features a client declared, and
the items each client is offered — base items plus the variants it qualifies for — under the
same prefixing, collision rules, pages and virtual-server cut as everyone else's."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_gateway.broker.aggregate import (
    federate,
    page,
    relevant_features,
    restrict,
    variants_fingerprint,
)
from mcp_gateway.config import ServerConfig, VirtualServer
from mcp_gateway.upstream.catalog import (
    ALL_FEATURES,
    ELICITATION_FORM,
    ELICITATION_URL,
    NO_FEATURES,
    PROMPTS,
    ROOTS,
    SAMPLING,
    TOOLS,
    ServerCatalog,
    Variant,
    client_features,
    declared_capabilities,
)

SCHEMA = {"type": "object"}


def tools(*names: str, description: str = "") -> dict[str, tuple[dict[str, Any], ...]]:
    return {
        "tools": tuple(
            {"name": n, "inputSchema": SCHEMA, "description": description} for n in names
        )
    }


def server(name: str, prefix: str) -> ServerConfig:
    return ServerConfig.model_validate(
        {"name": name, "url": f"http://{name}.test/mcp", "prefix": prefix}
    )


def names(catalog: ServerCatalog) -> list[str]:
    return [t["name"] for t in catalog.of(TOOLS)]


EVERYTHING = ServerCatalog(
    tools("echo", "add"),
    variants=(
        Variant(frozenset({ROOTS}), tools("echo", "add", "get-roots-list")),
        Variant(frozenset({SAMPLING}), tools("echo", "add", "sample")),
        Variant(frozenset({ELICITATION_FORM}), tools("echo", "add", "elicit")),
        Variant(frozenset({ELICITATION_URL}), tools("echo", "add", "elicit", "elicit-url")),
        # Needs two features at once: only the every-feature session listed it.
        Variant(ALL_FEATURES, tools("echo", "add", "get-roots-list", "sample", "both")),
    ),
)


@pytest.mark.parametrize(
    ("capabilities", "features"),
    [
        ({}, NO_FEATURES),
        (None, NO_FEATURES),
        ("roots", NO_FEATURES),
        ({"roots": {}}, {ROOTS}),
        ({"roots": {"listChanged": True}, "sampling": {}}, {ROOTS, SAMPLING}),
        ({"roots": True}, NO_FEATURES),  # not an object: not a declaration
        ({"elicitation": {}}, {ELICITATION_FORM}),  # empty means form mode (MCP 2025-11-25)
        ({"elicitation": {"form": {}}}, {ELICITATION_FORM}),
        ({"elicitation": {"url": {}}}, {ELICITATION_URL}),
        ({"elicitation": {"form": {}, "url": {}}}, {ELICITATION_FORM, ELICITATION_URL}),
        ({"experimental": {}, "tasks": {}}, NO_FEATURES),
    ],
)
def test_client_features_read_from_initialize_capabilities(
    capabilities: Any, features: set[str]
) -> None:
    assert client_features(capabilities) == frozenset(features)


def test_declared_capabilities_round_trip_to_the_same_features() -> None:
    for features in (NO_FEATURES, ALL_FEATURES, *(frozenset({f}) for f in ALL_FEATURES)):
        assert client_features(declared_capabilities(features)) == features
    assert declared_capabilities(ALL_FEATURES) == {
        "roots": {"listChanged": True},
        "sampling": {},
        "elicitation": {"form": {}, "url": {}},
    }


def test_a_client_sees_the_base_plus_each_variant_it_qualifies_for() -> None:
    assert names(EVERYTHING.for_client(NO_FEATURES)) == ["echo", "add"]
    assert names(EVERYTHING.for_client(frozenset({ROOTS}))) == ["echo", "add", "get-roots-list"]
    assert names(EVERYTHING.for_client(frozenset({ELICITATION_URL}))) == [
        "echo",
        "add",
        "elicit",
        "elicit-url",
    ]
    # Two features: two variants, not the every-feature one.
    assert names(EVERYTHING.for_client(frozenset({ROOTS, SAMPLING}))) == [
        "echo",
        "add",
        "get-roots-list",
        "sample",
    ]
    # New items follow the base ones, narrower variants first (then by feature name).
    assert names(EVERYTHING.for_client(ALL_FEATURES)) == [
        "echo",
        "add",
        "elicit",
        "elicit-url",
        "get-roots-list",
        "sample",
        "both",
    ]


def test_a_variant_item_replaces_the_base_item_of_the_same_name_in_place() -> None:
    catalog = ServerCatalog(
        tools("echo", "add"),
        variants=(Variant(frozenset({ROOTS}), tools("echo", "add", description="with roots")),),
    )
    seen = catalog.for_client(frozenset({ROOTS})).of(TOOLS)
    assert [(t["name"], t["description"]) for t in seen] == [
        ("echo", "with roots"),
        ("add", "with roots"),
    ]
    assert all(t["description"] == "" for t in catalog.for_client(frozenset({SAMPLING})).of(TOOLS))


def test_a_catalog_without_variants_is_served_as_is() -> None:
    plain = ServerCatalog(tools("echo"))
    assert plain.for_client(ALL_FEATURES) is plain


def test_variants_reach_only_their_clients_in_the_federation_with_prefixes() -> None:
    catalog = [
        (server("every", "ev_"), EVERYTHING),
        (server("plain", "pl_"), ServerCatalog(tools("echo"))),
    ]
    base = federate(catalog)
    roots = federate(catalog, frozenset({ROOTS}))
    assert [e.exposed["name"] for e in base.items(TOOLS)] == ["ev_echo", "ev_add", "pl_echo"]
    assert [e.exposed["name"] for e in roots.items(TOOLS)] == [
        "ev_echo",
        "ev_add",
        "ev_get-roots-list",
        "pl_echo",
    ]
    entry = roots.lookup(TOOLS, "ev_get-roots-list")
    assert entry is not None and (entry.server, entry.original_name) == ("every", "get-roots-list")
    assert base.lookup(TOOLS, "ev_get-roots-list") is None
    # Other kinds are untouched by a tools-only variant.
    assert roots.items(PROMPTS) == base.items(PROMPTS) == ()


def test_collision_rules_hold_for_variant_items() -> None:
    # The unprefixed server offers `x_tool` only to roots clients; the longer prefix keeps it.
    unprefixed = ServerCatalog(
        tools("plain"), variants=(Variant(frozenset({ROOTS}), tools("plain", "x_tool")),)
    )
    catalog = [(server("root", ""), unprefixed), (server("x", "x_"), ServerCatalog(tools("tool")))]
    roots = federate(catalog, frozenset({ROOTS}))
    entry = roots.lookup(TOOLS, "x_tool")
    assert entry is not None and entry.server == "x"
    assert [c.to_json() for c in roots.collisions] == [
        {"kind": "tools", "name": "x_tool", "kept": "x", "dropped": "root"}
    ]
    assert federate(catalog).collisions == ()


def test_pages_and_virtual_servers_cut_the_clients_own_view() -> None:
    catalog = [(server("every", "ev_"), EVERYTHING)]
    roots = federate(catalog, frozenset({ROOTS}))
    first = page(roots, TOOLS, None, 2)
    assert [t["name"] for t in first["tools"]] == ["ev_echo", "ev_add"]
    second = page(roots, TOOLS, first["nextCursor"], 2)
    assert [t["name"] for t in second["tools"]] == ["ev_get-roots-list"]
    virtual = VirtualServer.model_validate({"name": "ns/v", "tools": ["ev_get-roots-list"]})
    assert [e.exposed["name"] for e in restrict(roots, virtual).items(TOOLS)] == [
        "ev_get-roots-list"
    ]
    assert restrict(federate(catalog), virtual).items(TOOLS) == ()


def test_the_variants_fingerprint_moves_only_with_what_variants_add() -> None:
    adds_nothing = ServerCatalog(
        tools("echo"), variants=(Variant(frozenset({ROOTS}), tools("echo")),)
    )
    adds_one = ServerCatalog(
        tools("echo"), variants=(Variant(frozenset({ROOTS}), tools("echo", "r")),)
    )
    adds_other = ServerCatalog(
        tools("echo"), variants=(Variant(frozenset({ROOTS}), tools("echo", "s")),)
    )
    s = server("s", "s_")
    none = variants_fingerprint([(s, ServerCatalog(tools("echo")))], TOOLS)
    assert variants_fingerprint([(s, adds_nothing)], TOOLS) == none
    assert variants_fingerprint([(s, adds_one)], TOOLS) != none
    assert variants_fingerprint([(s, adds_one)], TOOLS) != variants_fingerprint(
        [(s, adds_other)], TOOLS
    )
    assert variants_fingerprint([(s, adds_one)], PROMPTS) == none


def test_only_features_whose_variants_add_something_are_relevant() -> None:
    s = server("s", "s_")
    adds_nothing = ServerCatalog(
        tools("echo"), variants=(Variant(frozenset({ROOTS}), tools("echo")),)
    )
    assert relevant_features([(s, adds_nothing)]) == NO_FEATURES
    assert relevant_features([(s, EVERYTHING)]) == ALL_FEATURES
    only_roots = ServerCatalog(
        tools("echo"),
        variants=(
            Variant(frozenset({ROOTS}), tools("echo", "r")),
            Variant(frozenset({SAMPLING}), tools("echo")),
        ),
    )
    assert relevant_features([(s, only_roots), (server("t", "t_"), adds_nothing)]) == {ROOTS}
