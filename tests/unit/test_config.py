"""The config model: Kuadrant's file shape loads unchanged, every problem is named by its path."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from mcp_gateway.check_config import check_config_main
from mcp_gateway.config import (
    ConfigError,
    GatewayConfig,
    ServerConfig,
    config_warnings,
    diff_configs,
    dump_config,
    load_config,
    parse_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def problems_of(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text))
    return {problem.path: problem.message for problem in caught.value.problems}


def one_server(**keys: object) -> str:
    entry = {"name": "s", "url": "http://127.0.0.1:9000/mcp", **keys}
    lines = "\n".join(f"    {key}: {value}" for key, value in entry.items())
    return f"servers:\n  - {lines.lstrip()}\n"


# --- Kuadrant's shape ------------------------------------------------------------------------


def test_kuadrant_example_loads_with_their_meaning() -> None:
    config = load_config(EXAMPLES / "kuadrant-config.yaml")
    by_name = {server.name: server for server in config.servers}
    first = by_name["mcp-test/mcp-server1-route"]
    assert first.url == "http://mcp-test-server1.mcp-test.svc.cluster.local:9090/mcp"
    assert first.hostname == "server1.mcp.local"
    assert first.prefix == "test1_"
    assert first.enabled is True
    assert first.transport == "http"
    assert first.path == "/mcp"
    assert by_name["mcp-test/mcp-server3-route"].enabled is False  # state: Disabled
    assert by_name["mcp-test/mcp-server3-route"].path == "/v1/mcp"
    assert by_name["weather-service"].prefix == "weather_"  # from the old `toolPrefix`
    assert by_name["mcp-test/mcp-api-key-server-route"].credential == "Bearer test-api-key-secret-token"
    assert [s.name for s in config.enabled_servers()] == [
        "mcp-test/mcp-server1-route",
        "mcp-test/mcp-api-key-server-route",
        "weather-service",
    ]
    assert config.virtual_servers[0].name == "mcp-test/test-virtual-server"
    assert config.virtual_servers[0].tools == ["test1_greet", "apikey_hello_world"]
    assert config.virtual_servers[0].prompts == ["test1_greeting"]
    assert config.server("weather-service") is by_name["weather-service"]
    assert config.server("nope") is None


def test_kuadrant_controller_empty_config_is_valid() -> None:
    # What their controller writes into a fresh Secret.
    config = parse_config("servers: []\nvirtualServers: []\n")
    assert config.servers == [] and config.virtual_servers == []


def test_go_null_lists_read_as_empty() -> None:
    config = parse_config("servers:\nvirtualServers:\n  - name: v\n    tools: null\n")
    assert config.servers == []
    assert config.virtual_servers[0].tools == []


def test_their_keys_we_do_not_act_on_are_accepted() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            servers:
              - name: ns/r
                url: https://r.example.com/mcp
                hostname: r.example.com
                prefix: r_
                state: ""
                auth: {type: bearer, token: abc}
                caCert: PEM
                tokenURLElicitation: {url: https://login.example.com/token}
                userSpecificList: true
                category: [search]
                hint: use for search
                tags: [a, b]
                guardrailsConfigIDs: [g1]
            gatewayCACertPEM: PEM
            globalGuardrails: {url: http://guard.local, configIDs: [x], model: m, failMode: deny}
            """
        )
    )
    server = config.servers[0]
    assert server.enabled is True  # Kuadrant reads an empty state as Enabled
    assert server.tags == ["a", "b"]
    assert server.user_specific_list is True


def test_example_config_for_make_up() -> None:
    config = load_config(EXAMPLES / "config.yaml")
    assert [(s.name, s.url, s.prefix) for s in config.servers] == [
        ("dynamic", "http://127.0.0.1:9101/mcp", "dyn_"),
        ("slow", "http://127.0.0.1:9102/mcp", "slow_"),
    ]
    assert config.gateway.envoy.listen == "127.0.0.1:8080"
    assert config.gateway.broker_listen == "127.0.0.1:8081"
    assert config.gateway.router_listen == "127.0.0.1:9002"


def test_defaults_of_our_section() -> None:
    settings = parse_config("servers: []").gateway
    assert settings.broker_listen == "127.0.0.1:8081"
    assert settings.router_listen == "127.0.0.1:9002"
    assert settings.envoy.listen == "127.0.0.1:8080"
    assert settings.sessions.store == "memory"
    assert settings.limits.max_body_bytes == 1_048_576
    assert settings.limits.max_depth == 64
    assert settings.limits.max_batch == 100


# --- the problems the issue names -------------------------------------------------------------


def test_bad_prefix_duplicate_name_and_bad_url_are_all_reported_with_paths() -> None:
    found = problems_of(
        """\
        servers:
          - name: alpha
            url: http://alpha.local/mcp
            prefix: alpha_
          - name: alpha
            url: http://beta.local/mcp
            prefix: beta_
          - name: gamma
            url: not a url
            prefix: "gam ma!"
        """
    )
    assert set(found) == {"servers[1].name", "servers[2].url", "servers[2].prefix"}
    assert "duplicate server name 'alpha'" in found["servers[1].name"]
    assert "invalid prefix" in found["servers[2].prefix"]
    assert "scheme must be http or https" in found["servers[2].url"]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://h/mcp", "scheme must be http or https"),
        ("http:///mcp", "no host"),
        ("http://h:99999/mcp", "not a valid URL"),
        ("http://h:0/mcp", "port 0"),
        ("ws://h/mcp", "scheme must be http or https"),
        ('""', "required for transport http"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    assert fragment in problems_of(one_server(url=url))["servers[0].url"]


def test_url_credentials_are_not_echoed_in_problems() -> None:
    message = problems_of(one_server(url="ftp://user:hunter22@h/mcp"))["servers[0].url"]
    assert "hunter22" not in message and "***@h" in message


@pytest.mark.parametrize("prefix", ['"a b"', '"a/b"', '"ü_"', "x" * 128])
def test_bad_prefixes(prefix: str) -> None:
    assert "invalid prefix" in problems_of(one_server(prefix=prefix))["servers[0].prefix"]


@pytest.mark.parametrize("prefix", ['""', "a", "A.b-c_", "x" * 127])
def test_good_prefixes(prefix: str) -> None:
    parse_config(one_server(prefix=prefix))


def test_prefixes_unique_and_not_prefixes_of_each_other() -> None:
    found = problems_of(
        """\
        servers:
          - {name: a, url: "http://a/mcp", prefix: gh_}
          - {name: b, url: "http://b/mcp", prefix: gh_}
          - {name: c, url: "http://c/mcp", prefix: gh_issues_}
          - {name: d, url: "http://d/mcp", prefix: g}
        """
    )
    assert "already used by servers[0]" in found["servers[1].prefix"]
    assert "overlap" in found["servers[2].prefix"]
    assert "overlap" in found["servers[3].prefix"]


def test_at_most_one_server_without_prefix() -> None:
    parse_config('servers:\n  - {name: a, url: "http://a/mcp"}\n  - {name: b, url: "http://b/mcp", prefix: b_}\n')
    found = problems_of('servers:\n  - {name: a, url: "http://a/mcp"}\n  - {name: b, url: "http://b/mcp"}\n')
    assert "second server without a prefix" in found["servers[1].prefix"]


def test_hostname_checked() -> None:
    assert "not a valid hostname" in problems_of(one_server(hostname="bad_host.local"))["servers[0].hostname"]
    assert "not a valid hostname" in problems_of(one_server(hostname='"h.local:8080"'))["servers[0].hostname"]
    assert parse_config(one_server(hostname='"*.mcp.local"')).servers[0].hostname == "*.mcp.local"


def test_transports() -> None:
    assert "needs a command" in problems_of(one_server(transport="stdio", url='""'))["servers[0].command"]
    stdio = parse_config(one_server(transport="stdio", url='""', command='"uvx my-server --flag \'a b\'"'))
    assert stdio.servers[0].command == ["uvx", "my-server", "--flag", "a b"]
    ws = parse_config(one_server(transport="websocket", url="wss://h/ws")).servers[0]
    assert ws.transport == "websocket"
    assert "ws or wss" in problems_of(one_server(transport="websocket"))["servers[0].url"]
    assert "only a stdio server" in problems_of(one_server(command="[x]"))["servers[0].command"]
    assert "'http', 'stdio' or 'websocket'" in problems_of(one_server(transport="grpc"))["servers[0].transport"]


def test_unknown_keys_rejected_with_a_suggestion() -> None:
    found = problems_of(one_server(prefx="a_") + "gateway:\n  brokr_listen: 127.0.0.1:1\n")
    assert found["servers[0].prefx"] == "unknown key (did you mean 'prefix'?)"
    assert found["gateway.brokr_listen"] == "unknown key (did you mean 'broker_listen'?)"
    assert problems_of("servers: []\nextra: 1\n")["extra"].startswith("unknown key")


def test_old_and_new_spellings_must_agree() -> None:
    assert "disagree" in problems_of(one_server(prefix="a_", toolPrefix="b_"))["servers[0]"]
    assert "contradicts" in problems_of(one_server(state="Disabled", enabled="true"))["servers[0]"]
    assert parse_config(one_server(state="Disabled", enabled="false")).servers[0].enabled is False
    assert parse_config(one_server(enabled="false")).servers[0].enabled is False
    assert "'Enabled', 'Disabled'" in problems_of(one_server(state="enabled"))["servers[0].state"]


def test_types_are_strict() -> None:
    assert problems_of(one_server(enabled='"yes"'))["servers[0].enabled"] == (
        "expected true or false, got a string"
    )
    assert problems_of(one_server(timeoutSeconds=0))["servers[0].timeoutSeconds"] == (
        "must be greater than 0"
    )
    assert problems_of("gateway: {page_size: 2.5}")["gateway.page_size"] == (
        "expected a whole number, got a decimal number"
    )
    assert problems_of(one_server(name="on"))["servers[0].name"].endswith("quote the value)")
    assert problems_of("servers: [just-a-name]")["servers[0]"] == (
        "expected a mapping of keys, got a string"
    )
    assert problems_of("servers:\n  - url: http://a/mcp\n")["servers[0].name"] == "required"


def test_credential_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "Bearer from-env-123")
    server = parse_config(one_server(credentialEnvVar="UPSTREAM_TOKEN")).servers[0]
    assert server.credential == "Bearer from-env-123"
    monkeypatch.delenv("UPSTREAM_TOKEN")
    found = problems_of(one_server(credentialEnvVar="UPSTREAM_TOKEN"))
    assert found["servers[0].credentialEnvVar"] == "environment variable UPSTREAM_TOKEN is not set (or empty)"
    found = problems_of(one_server(credentialEnvVar="X", credential="y"))
    assert "not both" in found["servers[0].credentialEnvVar"]
    # A disabled server needs no credential yet: it is read when a reload enables the server.
    disabled = parse_config(one_server(credentialEnvVar="UPSTREAM_TOKEN", state="Disabled")).servers[0]
    assert disabled.credential is None and disabled.credential_env_var == "UPSTREAM_TOKEN"


def test_credential_never_in_repr_str_or_problems() -> None:
    text = one_server(credential='"Bearer s3cr3t-value"', url="ftp://x/mcp")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert "s3cr3t" not in str(caught.value)
    server = parse_config(one_server(credential='"Bearer s3cr3t-value"'))
    assert "s3cr3t" not in repr(server) and "s3cr3t" not in str(server)
    assert "s3cr3t" not in repr(server.servers[0]) and "s3cr3t" not in str(server.servers[0])


def test_gateway_section_problems() -> None:
    found = problems_of(
        """\
        servers: []
        gateway:
          broker_listen: "localhost"
          router_listen: "::1:9002"
          public_url: "ftp://x"
          allowed_origins: ["http://ok.example", "http://x/path"]
          page_size: 0
          limits: {max_depth: 1}
          sessions: {keys: ["too-short"]}
          envoy: {admin_port: 70000}
        """
    )
    assert set(found) == {
        "gateway.broker_listen",
        "gateway.router_listen",
        "gateway.public_url",
        "gateway.allowed_origins",
        "gateway.page_size",
        "gateway.limits.max_depth",
        "gateway.sessions.keys",
        "gateway.envoy.admin_port",
    }
    assert "too-short" not in found["gateway.sessions.keys"]  # never echo a key
    assert "needs redis_url" in problems_of("gateway: {sessions: {store: redis}}")["gateway.sessions"]
    redis = parse_config("gateway: {sessions: {store: redis, redis_url: 'redis://127.0.0.1:6379/0'}}")
    assert redis.gateway.sessions.redis_url == "redis://127.0.0.1:6379/0"
    assert parse_config("gateway: {broker_listen: '[::1]:0'}").gateway.broker_listen == "[::1]:0"


def test_virtual_server_names_unique() -> None:
    found = problems_of("virtualServers:\n  - {name: v, tools: [a]}\n  - {name: v}\n")
    assert "duplicate virtual server name" in found["virtualServers[1].name"]


# --- the file itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the file is empty"),
        ("   \n# only a comment\n", "the file is empty"),
        ("servers: [\n", "YAML syntax error at line 2"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("just text", "top level must be a mapping"),
        ("servers: []\nservers: []\n", "duplicate key 'servers' at line 2"),
        ("servers: {name: a}", "expected a list, got a mapping"),
        ("servers: []\n  \x08", "character 0x0008 at line 2, column 3 is not allowed in YAML"),
    ],
)
def test_file_level_problems(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml")
    assert any(fragment in str(problem) for problem in caught.value.problems), caught.value.problems
    assert str(caught.value).startswith("f.yaml:")


def test_load_config_file_errors(tmp_path: Path) -> None:
    for path, fragment in [
        (tmp_path / "missing.yaml", "no such file"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.problems[0].message.startswith(fragment)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"servers: \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(binary)
    assert "not UTF-8" in caught.value.problems[0].message


def test_problems_in_document_order() -> None:
    servers = "".join(f'  - {{name: s{i}, prefix: p{i}_, url: "bad{i}"}}\n' for i in range(12))
    with pytest.raises(ConfigError) as caught:
        parse_config("servers:\n" + servers)
    assert [p.path for p in caught.value.problems] == [f"servers[{i}].url" for i in range(12)]


def test_models_built_in_code_are_cross_checked_too() -> None:
    server = ServerConfig(name="a", url="http://a/mcp", prefix="a_")
    with pytest.raises(ValidationError, match="duplicate server name"):
        GatewayConfig(servers=[server, server])


# --- diff and dump ----------------------------------------------------------------------------


def test_diff_names_added_removed_and_changed_servers() -> None:
    old = parse_config(
        'servers:\n  - {name: a, url: "http://a/mcp", prefix: a_}\n'
        '  - {name: b, url: "http://b/mcp", prefix: b_}\n'
        '  - {name: c, url: "http://c/mcp", prefix: c_, credential: one}\n'
    )
    new = parse_config(
        'servers:\n  - {name: a, url: "http://a/mcp", prefix: a_}\n'
        '  - {name: c, url: "http://c/mcp", prefix: c_, credential: two}\n'
        '  - {name: d, url: "http://d/mcp", prefix: d_}\n'
    )
    diff = diff_configs(old, new)
    assert (diff.added, diff.removed, diff.changed) == (("d",), ("b",), ("c",))
    assert not diff.gateway_changed and not diff.virtual_servers_changed
    assert not diff_configs(new, parse_config(dump_config(new)))
    moved = parse_config(
        'servers:\n  - {name: a, url: "http://a/mcp", prefix: a_}\ngateway: {page_size: 5}\n'
    )
    assert diff_configs(parse_config('servers:\n  - {name: a, url: "http://a/mcp", prefix: a_}\n'), moved).gateway_changed


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_loads_and_dump_round_trips(example: Path) -> None:
    config = load_config(example)
    text = dump_config(config)
    assert parse_config(text) == config
    assert dump_config(parse_config(text)) == text


def test_dump_writes_the_env_var_not_the_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOK", "Bearer env-secret-1")
    config = parse_config(one_server(credentialEnvVar="TOK"))
    text = dump_config(config)
    assert "env-secret-1" not in text and "credentialEnvVar: TOK" in text
    assert "state: Enabled" in text  # current Kuadrant spelling


def test_secrets_lists_every_secret_value() -> None:
    config = parse_config(
        "servers:\n"
        "  - {name: a, url: 'http://a/mcp', prefix: a_, credential: 'Bearer c1'}\n"
        "  - {name: b, url: 'http://b/mcp', prefix: b_, auth: {type: basic, username: u, password: p1}}\n"
        "gateway: {sessions: {keys: ['0123456789abcdef-key']}}\n"
    )
    assert sorted(config.secrets()) == ["0123456789abcdef-key", "Bearer c1", "p1"]


def test_problems_carry_the_line_of_their_key() -> None:
    text = textwrap.dedent(
        """\
        servers:
          - name: a
            url: http://a/mcp
            prefix: a_
          - name: a
            url: ftp://b/mcp
            prefx: b_
          - name: c
            prefix: c_
        gateway:
          page_size: 0
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    lines = {problem.path: problem.line for problem in caught.value.problems}
    assert lines == {
        "servers[1].name": 5,
        "servers[1].url": 6,
        "servers[1].prefx": 7,
        "servers[2].url": 8,  # missing: the line of the entry that lacks it
        "gateway.page_size": 11,
    }
    assert [problem.line for problem in caught.value.problems] == [5, 6, 7, 8, 11]  # file order
    assert str(caught.value.problems[-1]) == "gateway.page_size: must be greater than or equal to 1 (line 11)"


def test_url_password_is_masked_in_str_and_summary(tmp_path: Path) -> None:
    server = parse_config(one_server(url="https://user:pa55word@h.example/mcp")).servers[0]
    assert "pa55word" not in str(server)
    path = tmp_path / "c.yaml"
    path.write_text(one_server(url="https://user:pa55word@h.example/mcp"))
    out = io.StringIO()
    assert check_config_main(str(path), out=out) == 0
    assert "pa55word" not in out.getvalue() and "https://***@h.example/mcp" in out.getvalue()


def test_null_server_keys_read_as_unset_like_go_does() -> None:
    server = parse_config(one_server(prefix="", hostname="", credential="")).servers[0]
    assert (server.prefix, server.hostname, server.credential) == ("", None, None)
    assert problems_of("servers:\n  - name:\n    url: http://a/mcp\n")["servers[0].name"] == "required"


@pytest.mark.parametrize(
    ("credential", "header"),
    [
        ('"Bearer abc.def"', "Bearer abc.def"),  # Kuadrant: the whole header value
        ('"Basic dXNlcjpwYXNz"', "Basic dXNlcjpwYXNz"),
        ('"APIKEY k-123"', "APIKEY k-123"),
        ("abc.def", "Bearer abc.def"),  # a bare token
    ],
)
def test_authorization_header_from_credential(credential: str, header: str) -> None:
    assert parse_config(one_server(credential=credential)).servers[0].authorization == header


def test_no_credential_no_authorization() -> None:
    assert parse_config(one_server()).servers[0].authorization is None


def test_every_key_kuadrant_ever_wrote_is_accepted_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # The union of the keys of Kuadrant's config types over their history, branches included.
    text = textwrap.dedent(
        """\
        servers:
          - name: ns/everything
            url: http://e.ns.svc:8080/mcp
            hostname: e.mcp.local
            toolPrefix: e_
            enabled: true
            auth: {type: basic, username: u, password: p}
            credentialEnvVar: KUADRANT_TEST_CRED
            caCert: PEM
            tokenURLElicitation: {url: "https://t.example/", headerName: X-Token, headerValueFormat: "Bearer {token}"}
            credentialURLElicitation: {url: "https://c.example/"}
            userSpecificList: false
            category: search
            hint: h
            tags: [x]
            guardrailsConfigIDs: [g]
            timeouts: {toolCall: 30s, perTool: {slow_query: 2m}}
        virtualServers:
          - {name: ns/v, tools: [e_a], prompts: [e_p], resources: ["file:///r"]}
        a2aServers:
          - name: agent
            url: http://agent.ns.svc/a2a
            hostname: agent.local
            prefix: ag_
            enabled: true
            agentId: a1
            agentCardUrl: http://agent.ns.svc/.well-known/agent.json
            taskEndpoint: /tasks
            protocolBinding: jsonrpc
            metadata: {team: t}
        gatewayCACertPEM: PEM
        caCertBundle: PEM
        globalGuardrails: {url: "http://g/", configIDs: [a], model: m, failMode: allow}
        globalGuardrailsConfigIDs: [a]
        port: 8080
        bindAddr: 0.0.0.0
        logLevel: info
        """
    )
    monkeypatch.setenv("KUADRANT_TEST_CRED", "Bearer from-env")
    config = parse_config(text)
    server = config.servers[0]
    assert (server.prefix, server.credential, server.timeouts is not None) == ("e_", "Bearer from-env", True)
    assert config.virtual_servers[0].resources == ["file:///r"]
    assert config.a2a_servers[0].agent_id == "a1"
    dumped = dump_config(config)
    for key in ("a2aServers", "globalGuardrailsConfigIDs", "bindAddr", "perTool", "headerName", "resources"):
        assert key in dumped
    assert "from-env" not in dumped


def test_loosely_typed_kuadrant_keys_get_one_message() -> None:
    assert problems_of(one_server(category="[1]"))["servers[0].category"] == (
        "expected a string or a list of strings, got a list"
    )
    assert problems_of(one_server(timeouts="{toolCall: [1]}"))["servers[0].timeouts.toolCall"] == (
        "expected a duration such as 30s, got a list"
    )


def test_warnings_for_kept_but_unused_keys_and_cleartext_credentials() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            servers:
              - {name: a, url: "http://remote.example/mcp", prefix: a_, credential: "Bearer x"}
              - {name: b, url: "http://127.0.0.1:1/mcp", prefix: b_, credential: "Bearer x"}
              - {name: c, url: "https://remote.example/mcp", prefix: c_, credential: "Bearer x",
                 timeouts: {toolCall: 5s}, auth: {type: bearer}}
            bindAddr: 0.0.0.0
            """
        )
    )
    assert {(w.path, w.message.split(":")[0]) for w in config_warnings(config)} == {
        ("servers[0].url", "the credential would cross the network unencrypted"),
        ("servers[2].timeouts", "kept but not used"),
        ("servers[2].auth", "kept but not used"),
        ("bindAddr", "kept but not used"),
    }
    assert config_warnings(load_config(EXAMPLES / "config.yaml")) == []
