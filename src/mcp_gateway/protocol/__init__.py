"""The sans-I/O MCP protocol core: JSON-RPC 2.0 parsing, errors, revisions, names, headers.

No I/O and nothing of ours is imported here; everything public is re-exported below.
"""

from mcp_gateway.protocol._cancel import CANCELLED_METHOD as CANCELLED_METHOD
from mcp_gateway.protocol._cancel import cancelled_request_id as cancelled_request_id
from mcp_gateway.protocol._completion import COMPLETION_METHOD as COMPLETION_METHOD
from mcp_gateway.protocol._completion import CompletionRef as CompletionRef
from mcp_gateway.protocol._completion import completion_ref as completion_ref
from mcp_gateway.protocol._completion import replace_completion_ref as replace_completion_ref
from mcp_gateway.protocol._errors import ErrorCode as ErrorCode
from mcp_gateway.protocol._errors import ProtocolError as ProtocolError
from mcp_gateway.protocol._headers import check_header_body_mismatch as check_header_body_mismatch
from mcp_gateway.protocol._headers import decode_header_value as decode_header_value
from mcp_gateway.protocol._headers import encode_header_value as encode_header_value
from mcp_gateway.protocol._limits import Limits as Limits
from mcp_gateway.protocol._messages import ErrorResponse as ErrorResponse
from mcp_gateway.protocol._messages import Message as Message
from mcp_gateway.protocol._messages import Notification as Notification
from mcp_gateway.protocol._messages import Request as Request
from mcp_gateway.protocol._messages import RequestId as RequestId
from mcp_gateway.protocol._messages import Response as Response
from mcp_gateway.protocol._modern import CLIENT_CAPABILITIES_META as CLIENT_CAPABILITIES_META
from mcp_gateway.protocol._modern import CLIENT_INFO_META as CLIENT_INFO_META
from mcp_gateway.protocol._modern import MODERN_VERSIONS as MODERN_VERSIONS
from mcp_gateway.protocol._modern import PROTOCOL_VERSION_META as PROTOCOL_VERSION_META
from mcp_gateway.protocol._modern import ModernEnvelope as ModernEnvelope
from mcp_gateway.protocol._modern import is_modern as is_modern
from mcp_gateway.protocol._modern import missing_capability as missing_capability
from mcp_gateway.protocol._modern import modern_http_status as modern_http_status
from mcp_gateway.protocol._modern import read_modern_envelope as read_modern_envelope
from mcp_gateway.protocol._modern import session_version_refusal as session_version_refusal
from mcp_gateway.protocol._modern import unsupported_version as unsupported_version
from mcp_gateway.protocol._names import apply_prefix as apply_prefix
from mcp_gateway.protocol._names import is_valid_prefix as is_valid_prefix
from mcp_gateway.protocol._names import is_valid_tool_name as is_valid_tool_name
from mcp_gateway.protocol._names import strip_prefix as strip_prefix
from mcp_gateway.protocol._origin import origin_allowed as origin_allowed
from mcp_gateway.protocol._params import PARAM_HEADER_PREFIX as PARAM_HEADER_PREFIX
from mcp_gateway.protocol._params import ParamHeader as ParamHeader
from mcp_gateway.protocol._params import check_param_headers as check_param_headers
from mcp_gateway.protocol._params import mirror_param_headers as mirror_param_headers
from mcp_gateway.protocol._params import param_headers as param_headers
from mcp_gateway.protocol._parse import parse_message as parse_message
from mcp_gateway.protocol._peek import Peek as Peek
from mcp_gateway.protocol._peek import peek as peek
from mcp_gateway.protocol._rewrite import replace_id as replace_id
from mcp_gateway.protocol._rewrite import replace_routing_name as replace_routing_name
from mcp_gateway.protocol._serialize import error_response as error_response
from mcp_gateway.protocol._serialize import result_response as result_response
from mcp_gateway.protocol._serialize import serialize as serialize
from mcp_gateway.protocol._versions import LATEST_STABLE as LATEST_STABLE
from mcp_gateway.protocol._versions import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS
from mcp_gateway.protocol._versions import negotiate_version as negotiate_version
from mcp_gateway.protocol._versions import supports_batch as supports_batch
