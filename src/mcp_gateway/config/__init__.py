"""The gateway config: Kuadrant's mcp-gateway file shape, unchanged, plus our own keys.

A Kuadrant user can point us at the `config.yaml` their controller wrote (or their standalone
file) and it loads: `servers:` entries with name, url, hostname, prefix (or the older
`toolPrefix`), credential, state `Enabled|Disabled` (or the older `enabled: bool`) and the rest
of their keys; `virtualServers:` with name, tools and prompts. Keys of theirs that we do not act
on (auth, caCert, tags, hint, guardrails ...) are accepted and kept, so a file round-trips.
Our own keys live under `gateway:` (snake_case) and a few per-server camelCase keys next to
theirs (`transport`, `command`, `timeoutSeconds`, `credentialEnvVar`).

Every problem is reported at once, each with its dotted path (`servers[2].prefix`), because a
config is fixed in one edit, not in one edit per error. See docs/configuration.md.

The package: `_servers` (servers, virtual servers), `_settings` (our `gateway:` section),
`_document` (the whole file), `_loader` (YAML → model, problems with paths and lines), `_dump`
(diff for reloads, canonical output), `_warnings`, `_checks` and `_problems`. Import from here.
"""

from mcp_gateway.config._checks import is_valid_prefix as is_valid_prefix
from mcp_gateway.config._document import GatewayConfig as GatewayConfig
from mcp_gateway.config._dump import ConfigDiff as ConfigDiff
from mcp_gateway.config._dump import config_document as config_document
from mcp_gateway.config._dump import diff_configs as diff_configs
from mcp_gateway.config._dump import dump_config as dump_config
from mcp_gateway.config._loader import load_config as load_config
from mcp_gateway.config._loader import parse_config as parse_config
from mcp_gateway.config._problems import ConfigError as ConfigError
from mcp_gateway.config._problems import ConfigProblem as ConfigProblem
from mcp_gateway.config._servers import ServerConfig as ServerConfig
from mcp_gateway.config._servers import UpstreamOAuth as UpstreamOAuth
from mcp_gateway.config._servers import VirtualServer as VirtualServer
from mcp_gateway.config._settings import AuthRule as AuthRule
from mcp_gateway.config._settings import AuthSettings as AuthSettings
from mcp_gateway.config._settings import EnvoySettings as EnvoySettings
from mcp_gateway.config._settings import FastPathSettings as FastPathSettings
from mcp_gateway.config._settings import GatewaySettings as GatewaySettings
from mcp_gateway.config._settings import LimitsSettings as LimitsSettings
from mcp_gateway.config._settings import RateLimit as RateLimit
from mcp_gateway.config._settings import RateLimitSettings as RateLimitSettings
from mcp_gateway.config._settings import SessionSettings as SessionSettings
from mcp_gateway.config._settings import ToolRateLimit as ToolRateLimit
from mcp_gateway.config._settings import UpstreamRetrySettings as UpstreamRetrySettings
from mcp_gateway.config._warnings import config_warnings as config_warnings

__all__ = [
    "AuthRule",
    "AuthSettings",
    "ConfigDiff",
    "ConfigError",
    "ConfigProblem",
    "EnvoySettings",
    "FastPathSettings",
    "GatewayConfig",
    "GatewaySettings",
    "LimitsSettings",
    "RateLimit",
    "RateLimitSettings",
    "ServerConfig",
    "SessionSettings",
    "ToolRateLimit",
    "UpstreamOAuth",
    "UpstreamRetrySettings",
    "VirtualServer",
    "config_document",
    "config_warnings",
    "diff_configs",
    "dump_config",
    "is_valid_prefix",
    "load_config",
    "parse_config",
]
