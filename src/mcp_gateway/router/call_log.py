"""Every routed call, as Envoy reports it in batches: the source of the routed-call metrics.

A routed call takes one of two paths: through the ext_proc (the router sees it) or Envoy's Lua
fast path (no Python at all). Envoy sees both, so Envoy is the one witness: its OpenTelemetry
access logger, filtered to requests that carry `x-mcp-method` (set by the router or the Lua
filter on a routed `tools/call`, `prompts/get` or `completion/complete`, never by a client:
Envoy strips client `x-mcp-*` headers first), formats one short line per call and sends them
in batches (`buffer_size_bytes`, `buffer_flush_interval` in envoy/bootstrap.yaml.tmpl) as a
unary `opentelemetry.proto.collector.logs.v1.LogsService/Export` call to the router's grpclib
server. Python's work per call is a string split and a few dict updates; the gRPC call is paid
once per batch, not per call (docs/broker.md, "Routed calls").

What a line says and how it is counted: broker/routed_calls.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

from grpclib.const import Cardinality, Handler
from grpclib.server import Stream
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

# xds-protos ships these generated classes without type stubs.
ExportLogsServiceRequest: Any = cast(Any, logs_service_pb2).ExportLogsServiceRequest
ExportLogsServiceResponse: Any = cast(Any, logs_service_pb2).ExportLogsServiceResponse

EXPORT_LOGS_METHOD: Final = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
# The access logger's `log_name` (envoy/bootstrap.yaml.tmpl). Its line format is the
# metrics' business: broker/routed_calls.py `LINE_FORMAT` reads it.
LOG_NAME: Final = "mcp_gateway_routed_calls"


def _lines(request: Any) -> list[str]:
    # xds-protos carries OpenTelemetry's logs proto of before the 2022 rename: its
    # `instrumentation_library_logs` / `logs` are today's `scope_logs` / `log_records` (same
    # field numbers, so the same bytes Envoy 1.40 sends).
    return [
        record.body.string_value
        for resource in request.resource_logs
        for scope in resource.instrumentation_library_logs
        for record in scope.logs
    ]


class RoutedCallLog:
    """`opentelemetry.proto.collector.logs.v1.LogsService`, served by grpclib next to the
    ext_proc. `record` gets each batch's lines, one a call, and must not block (it counts)."""

    def __init__(self, record: Callable[[list[str]], None]) -> None:
        self._record = record

    def __mapping__(self) -> dict[str, Handler]:
        return {
            EXPORT_LOGS_METHOD: Handler(
                self.export,
                Cardinality.UNARY_UNARY,
                ExportLogsServiceRequest,
                ExportLogsServiceResponse,
            )
        }

    async def export(
        self,
        stream: Stream[Any, Any],
    ) -> None:
        request = await stream.recv_message()
        if request is not None:
            self._record(_lines(request))
        await stream.send_message(ExportLogsServiceResponse())
