"""Clients of upstream MCP servers and the supervisor that keeps them connected."""

from mcp_gateway.upstream.catalog import KINDS as KINDS
from mcp_gateway.upstream.catalog import PROMPTS as PROMPTS
from mcp_gateway.upstream.catalog import RESOURCE_TEMPLATES as RESOURCE_TEMPLATES
from mcp_gateway.upstream.catalog import RESOURCES as RESOURCES
from mcp_gateway.upstream.catalog import TOOLS as TOOLS
from mcp_gateway.upstream.catalog import ListKind as ListKind
from mcp_gateway.upstream.catalog import ServerCatalog as ServerCatalog
from mcp_gateway.upstream.client import HttpUpstreamClient as HttpUpstreamClient
from mcp_gateway.upstream.client import open_backend_session as open_backend_session
from mcp_gateway.upstream.errors import UpstreamError as UpstreamError
from mcp_gateway.upstream.rpc import UpstreamClient as UpstreamClient
from mcp_gateway.upstream.supervisor import Supervisor as Supervisor
from mcp_gateway.upstream.supervisor import Timing as Timing
from mcp_gateway.upstream.supervisor import UpstreamState as UpstreamState
from mcp_gateway.upstream.supervisor import UpstreamStatus as UpstreamStatus
