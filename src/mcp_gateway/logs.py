"""Structured logs: one JSON object a line off a TTY, readable columns on one; never a secret.

Everything goes through one stdlib handler, so our structlog events and the records of the
libraries we run (hypercorn, grpclib, trio-asyncio, kubernetes) share one format and one
redaction pass. The request context (session, server, tool, request_id) lives in contextvars,
which Trio copies into each task it spawns: bind it once where a request starts and every line
that request logs carries it. See docs/logging.md.
"""

from __future__ import annotations

import functools
import json as _json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "bind_request",
    "configure_logging",
    "forget_registered_secrets",
    "get_logger",
    "hypercorn_error_log",
    "redact_event",
    "register_secrets",
]

REDACTED = "[REDACTED]"
FORMAT_ENV = "MCP_GATEWAY_LOG_FORMAT"

# Keys whose values are secret wherever they appear (any nesting, any case, `-` or `_`).
_SECRET_KEY_WORDS = (
    "credential",
    "authorization",
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "cookie",
    "mcp_session_id",
    "session_key",
    "private_key",
)
# Exact keys that are secret though their names say little: the sealed session-key list.
_SECRET_KEYS_EXACT = frozenset({"keys"})
# Keys that name a secret rather than hold it (`secret_name`, `credentialEnvVar`, `token_ref`):
# their values are what an operator needs to read, so they stay.
_NAMING_SUFFIXES = ("name", "names", "env", "envvar", "env_var", "ref", "count")
# Secrets that ride inside free text: `Authorization: Bearer abc`, `redis://:pw@host`.
_AUTH_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]+")
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s]*@")
# `token=abc`, `'password': 'abc'`, `"api_key": "abc"` (a repr or a query string in a message)
_KEY_VALUE_RE = re.compile(
    r"""(?i)((?:credential|authorization|token|password|passwd|secret|api[_-]?key|cookie|"""
    r"""mcp[_-]session[_-]id)\w*(?:=|["']\s*:\s*["']?))([^\s"',;}&)\]]+)"""
)
# A header line as it appears in a message or a dump: `Authorization: abc`.
_HEADER_LINE_RE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|mcp-session-id|x-api-key)(:\s*)([^\r\n,;]+)"
)
# A bare JWT (a bearer token echoed without its scheme): header and payload are base64url JSON
# objects, so both start with "eyJ".
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# Cheap first look: text with none of these cannot match the patterns above (most log text).
# Matched against the lowercased text: a case-sensitive regex is several times faster.
_MAYBE_SECRET_RE = re.compile(
    r"bearer|basic|authoriz|cookie|session|api[_-]?key|token|passw|secret|credential|@|eyj"
)
# A registered value shorter than this would blank out ordinary words in every line.
_MIN_REGISTERED_SECRET = 6

_registered: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None
_registered_lock = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact these exact values anywhere in any log line, also inside free text.

    Call it with every credential a config holds (serve does, on load and on reload): an error
    message that echoes a header or an upstream's reply then cannot leak it.
    """
    global _registered_pattern
    with _registered_lock:
        new = {v for v in values if v and len(v) >= _MIN_REGISTERED_SECRET} - _registered
        if not new:
            return
        _registered.update(new)
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(_registered, key=len, reverse=True)
        _registered_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def forget_registered_secrets() -> None:
    """Drop every value `register_secrets` was given.

    The registry is process-wide, so a test that registers values clears it afterwards: a value
    left behind would redact matching text in every later test's log lines.
    """
    global _registered_pattern
    with _registered_lock:
        _registered.clear()
        _registered_pattern = None


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


@functools.lru_cache(maxsize=4096)  # a process logs a few hundred distinct keys, over and over
def _is_secret_name(key: str) -> bool:
    normal = key.lower().replace("-", "_")
    if normal in _SECRET_KEYS_EXACT:
        return True
    return any(word in normal for word in _SECRET_KEY_WORDS) and not normal.endswith(_NAMING_SUFFIXES)


def _redact_text(text: str) -> str:
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if _MAYBE_SECRET_RE.search(text.lower()) is None:
        return text
    text = _AUTH_SCHEME_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _HEADER_LINE_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _KEY_VALUE_RE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _JWT_RE.sub(REDACTED, text)
    return _URL_USERINFO_RE.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)


def _redact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _redact_text(value)
    if value is None or type(value) in (bool, int, float):  # most values: nothing to do
        return value
    if depth > 20:  # a structure this deep is not worth walking; say so rather than risk it
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: (REDACTED if _is_secret_key(key) and val is not None else _redact(val, depth + 1))
            for key, val in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return _redact_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, bool | int | float):  # subclasses: IntEnum, HTTPStatus
        return value
    # Anything else is rendered through str() by the renderer; redact that text now.
    return _redact_text(str(value))


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: secret keys get `[REDACTED]`, secret-looking text gets cut."""
    redacted: EventDict = _redact(event_dict)
    return redacted


# --------------------------------------------------------------------------------------------
# request context


@contextmanager
def bind_request(
    *,
    session: str | None = None,
    server: str | None = None,
    tool: str | None = None,
    request_id: str | int | None = None,
) -> Iterator[None]:
    """Bind the standard fields for the code inside (and the tasks it starts).

    `session` is the gateway session id from `SessionClaims.session_id`, never the sealed token
    a client sends (that token is a bearer credential).
    """
    fields = {
        key: value
        for key, value in (
            ("session", session),
            ("server", server),
            ("tool", tool),
            ("request_id", request_id),
        )
        if value is not None
    }
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def get_logger(name: str | None = None, **initial: Any) -> FilteringBoundLogger:
    """A structlog logger; `name` shows up as `logger` (use `__name__`)."""
    logger: FilteringBoundLogger = structlog.get_logger(name, **initial)
    return logger


def hypercorn_error_log() -> logging.Logger:
    """The logger to put in a hypercorn `Config.errorlog`.

    hypercorn's default (`"-"`) gives its logger a plain-text handler of its own, so its lines
    (startup, connection errors) would bypass our format and our redaction. Handed a logger, it
    uses that as it is: its records propagate to the root handler `configure_logging` installs.
    """
    return logging.getLogger("hypercorn.error")


# --------------------------------------------------------------------------------------------
# setup

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}
# Libraries that log request or header contents at DEBUG/INFO (hpack logs header values): they
# stay at WARNING whatever our level is.
_QUIET_LIBRARIES = ("hpack", "h2", "httpcore", "httpx", "kubernetes.client.rest", "urllib3")


class _GatewayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler we installed, so configuring twice replaces rather than duplicates."""


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(_LEVELS)}") from None


def configure_logging(
    level: str | int = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Set up structlog and stdlib logging for the whole process.

    json=None: $MCP_GATEWAY_LOG_FORMAT (`json` or `console`) if set, else JSON lines unless the
    stream is a terminal.
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        chosen = os.environ.get(FORMAT_ENV, "").strip().lower()
        if chosen not in ("", "json", "console"):
            raise ValueError(f"{FORMAT_ENV} must be json or console, not {chosen!r}")
        json = chosen == "json" if chosen else not (hasattr(out, "isatty") and out.isatty())
    number = _level_number(level)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    render: list[Processor]
    if json:
        render = [
            # No local variables in tracebacks: a frame's locals may hold a credential.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_event,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        render = [
            structlog.processors.format_exc_info,  # text first, so redaction sees it
            redact_event,
            structlog.dev.ConsoleRenderer(colors=out.isatty() if hasattr(out, "isatty") else False),
        ]

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        cache_logger_on_first_use=False,
    )
    handler = _GatewayHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _GatewayHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))


def _dumps(obj: Any, **kwargs: Any) -> str:
    return _json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))
