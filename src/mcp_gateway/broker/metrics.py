"""Prometheus metrics of one broker (its own registry, so several brokers can share a process)."""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mcp_gateway.broker.routed_calls import BuildInfo
from mcp_gateway.upstream.supervisor import UpstreamState, UpstreamStatus

__all__ = ["CONTENT_TYPE_LATEST", "BrokerMetrics"]


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(BuildInfo())
        # One line a metric: name, help, labels (in this broker's registry).
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        self.requests = counter("mcp_gateway_broker_requests", "MCP requests answered by the broker, by JSON-RPC method and HTTP status.", ["method", "status"])
        self.latency = histogram("mcp_gateway_broker_request_seconds", "Time to answer an MCP request (to the first byte for streams).", ["method"])
        self.upstream_state = gauge("mcp_gateway_upstream_state", "1 for the current state of each upstream, 0 for the others.", ["server", "state"])
        self.upstream_items = gauge("mcp_gateway_upstream_items", "Items an upstream offers, by kind.", ["server", "kind"])
        self.federated_tools = gauge("mcp_gateway_tools", "Tools in the federated tools/list.")
        self.sessions_created = counter("mcp_gateway_sessions_created", "Gateway sessions issued at initialize.")
        self.sessions_deleted = counter("mcp_gateway_sessions_deleted", "Gateway sessions ended by DELETE.")
        self.sessions_expired = counter("mcp_gateway_sessions_expired", "Expired gateway sessions this broker reaped (their backend sessions ended upstream).")
        self.expired_backend_deletes = counter("mcp_gateway_expired_backend_deletes", "DELETEs sent upstream for the backend sessions of expired gateway sessions (best effort, bounded: an upstream that does not answer keeps its session until its own timeout).", ["server"])
        self.open_streams = gauge("mcp_gateway_open_streams", "Open GET SSE streams.")
        self.backend_streams = gauge("mcp_gateway_backend_streams", "Backend sessions' own GET streams the broker holds for listening clients.")
        self.notifications_sent = counter("mcp_gateway_notifications_sent", "Notifications queued to client GET streams.")
        self.notifications_dropped = counter("mcp_gateway_notifications_dropped", "Notifications a client stream missed: it fell further behind than its session's replay log holds.")
        self.stream_resumes = counter("mcp_gateway_stream_resumes", "GET streams opened with Last-Event-ID, by outcome: resumed, gap (older than the replay log: what it kept was replayed), unknown (malformed, another session's or a log that is gone: a fresh stream).", ["outcome"])
        self.stream_replayed = counter("mcp_gateway_stream_replayed", "Messages replayed to GET streams that resumed with Last-Event-ID.")
        self.stream_replay_lost = counter("mcp_gateway_stream_replay_lost", "Messages a resuming client had missed that its session's replay log no longer held.")
        self.config_reloads = counter("mcp_gateway_config_reloads", "Config reloads applied.")

    def observe_upstreams(self, statuses: list[UpstreamStatus]) -> None:
        self.upstream_state.clear()
        self.upstream_items.clear()
        for status in statuses:
            for state in UpstreamState:
                self.upstream_state.labels(status.name, state.value).set(
                    1 if status.state is state else 0
                )
            for kind, count in status.counts.items():
                self.upstream_items.labels(status.name, kind).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
