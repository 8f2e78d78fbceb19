"""Properties of the config loader: defined answers for any input, lossless canonical output."""

from __future__ import annotations

import string
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.config import (
    ConfigError,
    GatewayConfig,
    dump_config,
    is_valid_prefix,
    parse_config,
)

# Keys of every level, so random documents reach deep into the models and not just "unknown key".
KEYS = [
    "servers", "virtualServers", "gateway", "name", "url", "hostname", "prefix", "toolPrefix",
    "enabled", "state", "credential", "credentialEnvVar", "transport", "command", "timeoutSeconds",
    "tools", "prompts", "auth", "tags", "category", "broker_listen", "router_listen", "sessions",
    "store", "redis_url", "keys", "limits", "max_depth", "envoy", "listen", "admin_port",
]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


def parse_or_problem(text: str) -> GatewayConfig | ConfigError:
    try:
        return parse_config(text)
    except ConfigError as error:
        assert error.problems, "a ConfigError always names at least one problem"
        for problem in error.problems:
            assert isinstance(problem.path, str) and problem.message
        return error


@given(documents)
def test_any_yaml_document_gives_a_config_or_a_config_error(document: Any) -> None:
    parse_or_problem(yaml.safe_dump(document))


@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    parse_or_problem(text)


# --- valid configs ----------------------------------------------------------------------------

label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
hostnames = st.lists(label, min_size=1, max_size=3).map(".".join)
safe_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)


@st.composite
def servers(draw: st.DrawFn) -> list[dict[str, Any]]:
    # Prefixes `token_` with distinct `_`-free tokens can never be prefixes of one another.
    tokens = draw(st.lists(label, min_size=0, max_size=6, unique=True))
    entries = []
    for index, token in enumerate(tokens):
        entry: dict[str, Any] = {
            "name": f"ns/{token}-{index}",
            "url": f"{draw(st.sampled_from(['http', 'https']))}://{draw(hostnames)}:{draw(st.integers(1, 65535))}/{token}",
            "prefix": f"{token}_",
        }
        if draw(st.booleans()):
            entry["hostname"] = draw(hostnames)
        if draw(st.booleans()):
            entry["state"] = draw(st.sampled_from(["Enabled", "Disabled"]))
        if draw(st.booleans()):
            entry["credential"] = draw(safe_text)
        if draw(st.booleans()):
            entry["timeoutSeconds"] = draw(st.floats(0.5, 3600))
        if draw(st.booleans()):
            entry["tags"] = draw(st.lists(safe_text, max_size=3))
        entries.append(entry)
    if draw(st.booleans()):
        entries.append({"name": "unprefixed", "url": "http://127.0.0.1:1/mcp"})
    if draw(st.booleans()):
        entries.append({"name": "local", "transport": "stdio", "command": draw(st.lists(safe_text, min_size=1, max_size=3)), "prefix": "local."})
    return entries


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {"servers": draw(servers())}
    if draw(st.booleans()):
        document["virtualServers"] = [
            {"name": name, "tools": draw(st.lists(safe_text, max_size=3))}
            for name in draw(st.lists(label, max_size=3, unique=True))
        ]
    if draw(st.booleans()):
        document["gateway"] = {
            "broker_listen": f"127.0.0.1:{draw(st.integers(0, 65535))}",
            "page_size": draw(st.integers(1, 10_000)),
            "allowed_origins": [f"https://{h}" for h in draw(st.lists(hostnames, max_size=2))],
            "sessions": draw(
                st.sampled_from([{}, {"store": "redis", "redis_url": "redis://127.0.0.1:6379/1"}])
            )
            | ({"keys": draw(st.lists(st.text(min_size=16, max_size=40), min_size=1, max_size=2))} if draw(st.booleans()) else {}),
            "limits": {"max_batch": draw(st.integers(1, 10_000))},
        }
    return document


@given(configs())
def test_dump_then_parse_gives_the_same_config(document: dict[str, Any]) -> None:
    config = parse_config(yaml.safe_dump(document))
    text = dump_config(config)
    assert parse_config(text) == config
    assert dump_config(parse_config(text)) == text  # canonical: one config, one text


@given(st.text(max_size=140))
def test_prefix_rule_is_the_tool_name_alphabet(prefix: str) -> None:
    expected = len(prefix) <= 127 and all(
        ch in string.ascii_letters + string.digits + "_.-" for ch in prefix
    )
    assert is_valid_prefix(prefix) == expected


MUTATIONS: list[tuple[str, Any]] = [
    ("url", "ftp://elsewhere/mcp"),
    ("url", "http://h:99999/"),
    ("prefix", "no spaces allowed"),
    ("hostname", "under_score.local"),
    ("transport", "carrier-pigeon"),
    ("state", "enabled"),
    ("timeoutSeconds", -1),
    ("prefx", "typo_"),
    ("name", ""),
    ("command", ["x"]),
]


@given(
    credential=st.text(string.ascii_letters + string.digits + "-._~+/", min_size=10, max_size=40),
    mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4),
    as_auth=st.booleans(),
)
def test_a_credential_is_never_echoed_in_problems(
    credential: str, mutations: list[tuple[str, Any]], as_auth: bool
) -> None:
    server: dict[str, Any] = {"name": "s", "url": "http://127.0.0.1:1/mcp", "prefix": "s_"}
    if as_auth:
        server["auth"] = {"type": "bearer", "token": credential, "password": credential}
    else:
        server["credential"] = f"Bearer {credential}"
    server.update(dict(mutations))
    outcome = parse_or_problem(yaml.safe_dump({"servers": [server, dict(server)]}))
    assert isinstance(outcome, ConfigError)
    assert credential not in str(outcome)
    assert all(credential not in problem.message for problem in outcome.problems)


@pytest.mark.parametrize("break_char", ["\x85", "\u2028", "\u2029"])
def test_dump_keeps_unicode_line_breaks_inside_strings(break_char: str) -> None:
    # Found by the round-trip property: PyYAML folded a NEL in a session key into a space.
    key = "0" * 15 + break_char
    config = parse_config(yaml.safe_dump({"servers": [], "gateway": {"sessions": {"keys": [key]}}}))
    assert parse_config(dump_config(config)) == config
