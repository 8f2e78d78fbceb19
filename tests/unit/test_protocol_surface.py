"""The public surface of mcp_gateway.protocol, and its promise to stay free of I/O."""

import ast
import pathlib

import mcp_gateway.protocol as protocol

EXPECTED_PUBLIC = {
    "ErrorCode",
    "ProtocolError",
    "Limits",
    "RequestId",
    "Request",
    "Notification",
    "Response",
    "ErrorResponse",
    "Message",
    "parse_message",
    "serialize",
    "error_response",
    "result_response",
    "Peek",
    "peek",
    "SUPPORTED_VERSIONS",
    "LATEST_STABLE",
    "negotiate_version",
    "supports_batch",
    "is_valid_tool_name",
    "is_valid_prefix",
    "apply_prefix",
    "strip_prefix",
    "replace_routing_name",
    "encode_header_value",
    "decode_header_value",
    "check_header_body_mismatch",
    "ParamHeader",
    "param_headers",
    "check_param_headers",
    "mirror_param_headers",
    "PARAM_HEADER_PREFIX",
    "COMPLETION_METHOD",
    "CompletionRef",
    "completion_ref",
    "replace_completion_ref",
    "replace_id",
    "CANCELLED_METHOD",
    "cancelled_request_id",
    "origin_allowed",
    "MODERN_VERSIONS",
    "PROTOCOL_VERSION_META",
    "CLIENT_CAPABILITIES_META",
    "CLIENT_INFO_META",
    "ModernEnvelope",
    "is_modern",
    "session_version_refusal",
    "modern_http_status",
    "read_modern_envelope",
    "unsupported_version",
    "missing_capability",
}

PROTOCOL_DIR = pathlib.Path(protocol.__file__).parent
# Anything that does I/O or belongs to another layer of the gateway.
FORBIDDEN_IMPORT_ROOTS = {
    "trio",
    "anyio",
    "asyncio",
    "httpx",
    "httpcore",
    "grpclib",
    "quart",
    "quart_trio",
    "hypercorn",
    "socket",
    "redis",
    "kubernetes",
    "structlog",
    "subprocess",
}


def test_public_names_are_exactly_the_contract() -> None:
    public = {name for name in vars(protocol) if not name.startswith("_")}
    assert public == EXPECTED_PUBLIC


def test_every_public_name_resolves() -> None:
    for name in EXPECTED_PUBLIC:
        assert getattr(protocol, name) is not None


def _imported_modules(path: pathlib.Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
    return modules


def test_protocol_modules_import_no_io_library_and_nothing_else_of_ours() -> None:
    sources = sorted(PROTOCOL_DIR.glob("*.py"))
    assert sources
    for source in sources:
        for module in _imported_modules(source):
            root = module.split(".")[0]
            assert root not in FORBIDDEN_IMPORT_ROOTS, f"{source.name} imports {module}"
            if root == "mcp_gateway":
                assert module.startswith("mcp_gateway.protocol"), f"{source.name} imports {module}"
