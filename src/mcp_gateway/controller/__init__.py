"""The Kubernetes discovery controller: MCPServerRegistrations (and the HTTPRoutes they target),
MCPVirtualServers and MCPGatewayExtensions in, the gateway config Secret and status conditions out.

`reconcile` is the pure decision; `informer`, `leader` and `service` are the I/O around it;
`main.run_controller` is what `mcp-gateway controller` calls.
"""
