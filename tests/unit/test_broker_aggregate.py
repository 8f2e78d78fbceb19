import pytest

from mcp_gateway.broker.aggregate import BadCursor, decode_cursor, encode_cursor, federate, page
from mcp_gateway.config import ServerConfig
from mcp_gateway.upstream.catalog import PROMPTS, TOOLS, ServerCatalog

SCHEMA = {"type": "object"}


def server(name: str, prefix: str) -> ServerConfig:
    return ServerConfig(name=name, url=f"http://127.0.0.1:1/{name}", prefix=prefix)


def tools(*names: str) -> ServerCatalog:
    return ServerCatalog({"tools": tuple({"name": n, "inputSchema": SCHEMA} for n in names)})


def test_the_union_carries_each_servers_prefix_in_config_order() -> None:
    federation = federate([(server("b", "b_"), tools("x", "y")), (server("a", "a_"), tools("x"))])
    assert [e.exposed["name"] for e in federation.items(TOOLS)] == ["b_x", "b_y", "a_x"]
    entry = federation.lookup(TOOLS, "a_x")
    assert entry is not None and (entry.server, entry.original_name) == ("a", "x")
    assert federation.collisions == ()


def test_a_collision_goes_to_the_longer_prefix_whatever_the_order_and_is_reported() -> None:
    plain = (server("plain", ""), tools("dyn_hello", "other"))
    prefixed = (server("dyn", "dyn_"), tools("hello"))
    for catalog in ([plain, prefixed], [prefixed, plain]):
        federation = federate(catalog)
        entry = federation.lookup(TOOLS, "dyn_hello")
        assert entry is not None and entry.server == "dyn"
        assert [c.to_json() for c in federation.collisions] == [
            {"kind": "tools", "name": "dyn_hello", "kept": "dyn", "dropped": "plain"}
        ]
        assert sorted(e.exposed["name"] for e in federation.items(TOOLS)) == ["dyn_hello", "other"]


def test_three_hundred_tools_page_through_opaque_cursors_without_loss_or_repeat() -> None:
    federation = federate(
        [
            (server("a", "a_"), tools(*(f"t{i}" for i in range(150)))),
            (server("b", "b_"), tools(*(f"t{i}" for i in range(150)))),
        ]
    )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        result = page(federation, TOOLS, cursor, 100)
        seen.extend(t["name"] for t in result["tools"])
        pages += 1
        cursor = result.get("nextCursor")
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 300


def test_the_fingerprint_moves_only_when_the_listed_items_change() -> None:
    before = federate([(server("a", "a_"), tools("x"))])
    same = federate([(server("a", "a_"), tools("x"))])
    after = federate([(server("a", "a_"), tools("x", "y"))])
    assert before.fingerprint(TOOLS) == same.fingerprint(TOOLS)
    assert before.fingerprint(TOOLS) != after.fingerprint(TOOLS)
    assert before.fingerprint(PROMPTS) == after.fingerprint(PROMPTS)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64!",
        "bm90IGpzb24",
        encode_cursor(PROMPTS, 0),
        "eyJrIjoidG9vbHMiLCJvIjotMX0",
        "x" * 500,
    ],
)
def test_cursors_we_did_not_issue_for_this_list_are_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(TOOLS, cursor)


def test_a_cursor_round_trips() -> None:
    assert decode_cursor(TOOLS, encode_cursor(TOOLS, 200)) == 200


def test_resource_uris_of_prefixed_servers_are_marked_and_resolve_back() -> None:
    from mcp_gateway.broker.aggregate import expose_uri, resolve_uri

    plain, dyn, docs = server("plain", ""), server("dyn", "dyn_"), server("docs", "docs.")
    servers = [plain, dyn, docs]
    for owner, original in [
        (dyn, "file:///README.md"),
        (docs, "file:///README.md"),
        (plain, "file:///README.md"),
    ]:
        exposed = expose_uri(owner.prefix, original)
        assert resolve_uri(exposed, servers) == (owner, original)
    assert expose_uri("dyn_", "file:///x") == "mcp-gateway:dyn_file:///x"
    # A URI a client expanded from an exposed template resolves like a listed one.
    assert resolve_uri("mcp-gateway:dyn_file:///any/path", servers) == (dyn, "file:///any/path")
    # Without an unprefixed server, a URI under no mark belongs to nobody.
    assert resolve_uri("file:///x", [dyn, docs]) is None
    assert resolve_uri("mcp-gateway:nobody_x", [dyn, docs]) is None


def test_two_servers_with_the_same_uri_are_both_listed() -> None:
    from mcp_gateway.upstream.catalog import RESOURCES

    same = ServerCatalog({"resources": ({"uri": "file:///README.md", "name": "readme"},)})
    federation = federate([(server("a", "a_"), same), (server("b", "b_"), same)])
    assert [e.exposed["uri"] for e in federation.items(RESOURCES)] == [
        "mcp-gateway:a_file:///README.md",
        "mcp-gateway:b_file:///README.md",
    ]
    assert federation.collisions == ()


def test_an_item_that_cannot_carry_its_prefix_is_skipped_not_fatal() -> None:
    federation = federate([(server("a", "prefix_"), tools("t" * 125, "ok"))])
    assert [e.exposed["name"] for e in federation.items(TOOLS)] == ["prefix_ok"]


def test_a_virtual_server_keeps_only_what_it_names_and_pages_on_its_own() -> None:
    from mcp_gateway.broker.aggregate import restrict
    from mcp_gateway.config import VirtualServer

    federation = federate(
        [(server("a", "a_"), tools("x", "y", "z")), (server("b", "b_"), tools("x"))]
    )
    virtual = VirtualServer(name="ns/v", tools=["b_x", "a_z", "a_missing"])
    view = restrict(federation, virtual)
    assert [e.exposed["name"] for e in view.items(TOOLS)] == ["a_z", "b_x"]
    assert view.lookup(TOOLS, "a_x") is None and view.lookup(TOOLS, "b_x") is not None
    assert view.items(PROMPTS) == ()
    first = page(view, TOOLS, None, 1)
    assert [t["name"] for t in first["tools"]] == ["a_z"]
    assert [t["name"] for t in page(view, TOOLS, first["nextCursor"], 1)["tools"]] == ["b_x"]
    assert [e.exposed["name"] for e in federation.items(TOOLS)] == ["a_x", "a_y", "a_z", "b_x"]
