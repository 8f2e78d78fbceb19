"""`/status` for a browser: the status JSON as one self-contained HTML page.

No external asset, no script framework: inline CSS and a `<meta http-equiv="refresh">`, so the
page works from the admin address with nothing else reachable. Every value is escaped: upstream
reasons, server info and a refused config's problems come from upstreams and files the operator
does not control character by character. The page shows what the JSON shows, so it hides what
the JSON hides (credentials and query strings of upstream URLs, upstream/status.py `public_url`).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any, Final

REFRESH_SECONDS: Final = 5

_STYLE: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.muted { color: #59636e; } .summary { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { border: 1px solid #d1d9e0; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 20px; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 6px 10px;
  border-bottom: 1px solid #d1d9e0; vertical-align: top; } th { background: #f6f8fa; }
.state { font-weight: 600; border-radius: 10px; padding: 1px 8px; white-space: nowrap; }
.ready { background: #dafbe1; color: #1a7f37; } .failed { background: #ffebe9; color: #d1242f; }
.other { background: #fff8c5; color: #9a6700; } .error { color: #d1242f; white-space: pre-wrap; }
code { font: 12px ui-monospace, monospace; }
"""


def _text(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _time(unix: Any) -> str:
    if not isinstance(unix, int | float):
        return "never"
    stamp = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _state_class(state: str) -> str:
    return state if state in ("ready", "failed") else "other"


def _card(label: str, value: Any) -> str:
    return f'<div class="card"><span class="muted">{_text(label)}</span><b>{_text(value)}</b></div>'


def _upstream_row(upstream: Mapping[str, Any]) -> str:
    state = str(upstream.get("state", ""))
    info = upstream.get("serverInfo") or {}
    counts = upstream.get("counts") or {}
    others = ", ".join(f"{_text(k)} {_text(v)}" for k, v in counts.items() if k != "tools")
    return (
        "<tr>"
        f'<td><b>{_text(upstream.get("name"))}</b><br><code class="muted">{_text(upstream.get("url"))}</code></td>'
        f'<td><span class="state {_state_class(state)}">{_text(state)}</span></td>'
        f"<td>{_text(upstream.get('reason') or '')}</td>"
        f'<td>{_text(upstream.get("toolCount"))}<br><span class="muted">{others}</span></td>'
        f"<td>{_time(upstream.get('lastRefresh'))}</td>"
        f"<td>{_text(info.get('name', ''))} {_text(info.get('version', ''))}"
        f'<br><span class="muted">{_text(upstream.get("protocolVersion") or "")}</span></td>'
        "</tr>"
    )


def _upstreams(upstreams: Iterable[Mapping[str, Any]]) -> str:
    rows = "".join(_upstream_row(u) for u in upstreams)
    if not rows:
        rows = '<tr><td colspan="6" class="muted">no upstream configured</td></tr>'
    return (
        '<table id="upstreams"><thead><tr><th>upstream</th><th>state</th><th>reason</th>'
        "<th>tools</th><th>last refresh</th><th>server</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _config_line(config: Mapping[str, Any]) -> str:
    path = config.get("path")
    where = f"config <code>{_text(path)}</code>" if path else "config"
    return f"{where} loaded {_time(config.get('loadedAt'))}"


def render(status: Mapping[str, Any], sessions: Mapping[str, Any]) -> str:
    """The page for the status JSON `status` and the session figures `sessions`."""
    config = status.get("config") or {}
    streams = status.get("backendStreams") or {}
    last_error = config.get("lastError")
    error = (
        f'<p class="error" id="reload-error">{_text(last_error)}</p>'
        if last_error
        else '<p class="muted" id="reload-error">none</p>'
    )
    summary = "".join(
        [
            _card("ready", "yes" if status.get("ready") else "no"),
            _card("tools", status.get("tools")),
            _card("sessions open", sessions.get("open")),
            _card("sessions created", sessions.get("created")),
            _card("client streams", status.get("openStreams")),
            _card("backend streams held", streams.get("heldStreams")),
            _card("config reloads", config.get("reloads")),
        ]
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mcp-gateway status</title><style>{_STYLE}</style></head><body>"
        "<h1>mcp-gateway status</h1>"
        f'<p class="muted">{_config_line(config)}; this page refreshes every {REFRESH_SECONDS} s '
        "(the same data as JSON: <code>curl</code> this URL)</p>"
        f'<div class="summary">{summary}</div>'
        f"<h2>Upstreams</h2>{_upstreams(status.get('upstreams') or [])}"
        f"<h2>Last reload error</h2>{error}"
        "</body></html>\n"
    )
