"""Who may use what: a token's scopes and claims against the configured rules. No I/O."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_gateway.config import AuthSettings


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified bearer token: who, what it may do, until when."""

    subject: str
    scopes: frozenset[str]
    expires_at: float  # seconds since the epoch (`exp`)
    claims: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    scopes: frozenset[str]
    claims: tuple[tuple[str, str], ...]

    def grants(self, principal: Principal) -> bool:
        return self.scopes <= principal.scopes and all(
            _claim_holds(principal.claims.get(name), value) for name, value in self.claims
        )


def _claim_holds(claim: Any, value: str) -> bool:
    if isinstance(claim, list):
        return value in claim
    return isinstance(claim, str) and claim == value


@dataclass(frozen=True, slots=True)
class Policy:
    """The first rule whose pattern matches an exposed name decides; no rule: any valid token."""

    rules: tuple[Rule, ...] = ()
    required_scopes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: AuthSettings) -> Policy:
        rules = tuple(
            Rule(
                re.compile(fnmatch.translate(rule.match)),
                frozenset(rule.scopes),
                tuple(sorted(rule.claims.items())),
            )
            for rule in settings.rules
        )
        return cls(rules, frozenset(settings.required_scopes))

    def rule_for(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.pattern.match(name):
                return rule
        return None

    def allows(self, principal: Principal, name: str) -> bool:
        rule = self.rule_for(name)
        return rule is None or rule.grants(principal)

    def admits(self, principal: Principal) -> bool:
        """May this token make any request at all."""
        return self.required_scopes <= principal.scopes

    def scopes_for(self, name: str) -> frozenset[str]:
        """What a client should ask for to use `name` (the scope of a 403 challenge)."""
        rule = self.rule_for(name)
        return self.required_scopes | (rule.scopes if rule is not None else frozenset())

    def all_scopes(self) -> frozenset[str]:
        found = set(self.required_scopes)
        for rule in self.rules:
            found |= rule.scopes
        return frozenset(found)


# method → where its target's exposed name is in params
_NAMED: Mapping[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}


def requested_name(method: str, params: Mapping[str, Any] | None) -> str | None:
    """The exposed name (or URI) a request uses, the one rules match; None for requests that use
    no single item (lists, ping, initialize ...)."""
    params = params or {}
    key = _NAMED.get(method)
    if key is not None:
        value = params.get(key)
        return value if isinstance(value, str) else None
    if method == "completion/complete":
        ref = params.get("ref")
        if isinstance(ref, Mapping):
            value = ref.get("name") if ref.get("type") == "ref/prompt" else ref.get("uri")
            return value if isinstance(value, str) else None
    return None
