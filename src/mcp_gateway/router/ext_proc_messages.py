"""The ext_proc messages the router answers with: header mutations, immediate replies, the
upstream route of a call (protobuf builders, no state)."""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2

from mcp_gateway.router.decision import (
    Reply,
    ToUpstream,
)

_OVERWRITE: Final = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
CONTINUE: Final = pb.CommonResponse()


# ---------------------------------------------------------------------------------------------
# protobuf ↔ decision values


def headers_of(http_headers: pb.HttpHeaders) -> dict[str, str]:
    # Envoy sends values in raw_value (bytes); `value` stays empty. A header sent more than once
    # reads as its lines combined (RFC 9110 5.3), as the broker reads it (broker/http.py
    # combined_header): taking the last line here and the first there let one request be
    # routed under one session and served by the broker under another. Combined, two session
    # ids name no session (404) and two origins are no allowed origin (403).
    headers: dict[str, str] = {}
    for h in http_headers.headers.headers:
        name = h.key.lower()
        value = h.raw_value.decode("latin-1") if h.raw_value else h.value
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def header_mutation(
    set_headers: tuple[tuple[str, str], ...] = (), remove_headers: tuple[str, ...] = ()
) -> pb.HeaderMutation:
    return pb.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=name, raw_value=value.encode("latin-1")),
                append_action=_OVERWRITE,
            )
            for name, value in set_headers
        ],
        remove_headers=list(remove_headers),
    )


def immediate(
    reply: Reply, extra_headers: tuple[tuple[str, str], ...] = ()
) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=reply.status),
            headers=header_mutation(reply.headers + extra_headers),
            body=reply.body,
            details="mcp_gateway_router",
        )
    )


def to_upstream(decision: ToUpstream) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        request_body=pb.BodyResponse(
            response=pb.CommonResponse(
                status=pb.CommonResponse.CONTINUE_AND_REPLACE,
                header_mutation=header_mutation(decision.set_headers, decision.remove_headers),
                body_mutation=pb.BodyMutation(body=decision.body),
                # Re-route on the x-mcp-servername we just set; otherwise the route chosen at
                # header time (the broker) silently stays.
                clear_route_cache=True,
            )
        )
    )


BODY_CONTINUE: Final = pb.ProcessingResponse(request_body=pb.BodyResponse(response=CONTINUE))
RESPONSE_HEADERS_CONTINUE: Final = pb.ProcessingResponse(
    response_headers=pb.HeadersResponse(response=CONTINUE)
)
# Needs `allow_mode_override: true` on the filter (envoy/bootstrap.yaml.tmpl).
STREAM_RESPONSE_BODY: Final = processing_mode_pb2.ProcessingMode(
    response_body_mode=processing_mode_pb2.ProcessingMode.STREAMED
)
