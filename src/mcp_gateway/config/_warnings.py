"""What is valid but probably not what the operator wants (shown by check-config)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mcp_gateway.config._document import GatewayConfig
from mcp_gateway.config._problems import ConfigProblem

_NOT_USED = {
    "auth": "kept but not used: put the whole Authorization header value in `credential`",
    "caCert": "kept but not used: https upstreams are verified against the default CA bundle",
    "timeouts": "kept but not used: the gateway applies `timeoutSeconds`",
    "tokenURLElicitation": "kept but not used",
    "credentialURLElicitation": "kept but not used",
    "userSpecificList": "kept but not used",
    "guardrailsConfigIDs": "kept but not used",
}
_TOP_LEVEL_NOT_USED = {
    "a2aServers": "kept but not used",
    "globalGuardrails": "kept but not used",
    "globalGuardrailsConfigIDs": "kept but not used",
    "gatewayCACertPEM": "kept but not used",
    "caCertBundle": "kept but not used",
    "port": "kept but not used: set gateway.broker_listen",
    "bindAddr": "kept but not used: set gateway.broker_listen",
    "logLevel": "kept but not used: the log level is the command line's",
}


def config_warnings(config: GatewayConfig) -> list[ConfigProblem]:
    """What is valid but probably not what the operator wants: Kuadrant keys we keep without
    acting on them, and a credential that would travel unencrypted."""
    warnings = []
    for index, server in enumerate(config.servers):
        given = server.model_dump(by_alias=True, exclude_defaults=True)
        warnings += [ConfigProblem(f"servers[{index}].{key}", why) for key, why in _NOT_USED.items() if key in given]
        url = urlsplit(server.url)
        if (server.credential or server.oauth) and url.scheme in ("http", "ws") and not _is_loopback(url.hostname):
            warnings.append(
                ConfigProblem(
                    f"servers[{index}].url",
                    f"the credential would cross the network unencrypted: use {url.scheme}s",
                )
            )
        token_url = urlsplit(server.oauth.token_url) if server.oauth is not None else None
        if token_url is not None and token_url.scheme == "http" and not _is_loopback(token_url.hostname):
            warnings.append(
                ConfigProblem(
                    f"servers[{index}].oauth.tokenUrl",
                    "the client secret would cross the network unencrypted: use https",
                )
            )
    given = config.model_dump(by_alias=True, exclude_defaults=True)
    warnings += [ConfigProblem(key, why) for key, why in _TOP_LEVEL_NOT_USED.items() if given.get(key)]
    return warnings


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
