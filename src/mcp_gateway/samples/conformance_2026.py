"""What the conformance suite's 2026-07-28 scenarios (conformance-next, 0.2.0-alpha.12) call
beyond the 0.1.16 fixture, split in two by where the scenario is best served through the gateway.

- `add_to_fixture(server)`: on the stateful fixture (conformance_fixture.py), which the gateway
  reaches as a legacy upstream. Tools that ask mid-call through the SDK's `Resolve(...)`
  markers: on a 2025-11-25 session the SDK sends each question as a server->client request on
  the call's stream, which the gateway holds and turns into an `InputRequiredResult` for a
  2026-07-28 client (docs/broker.md, "Multi-round-trip results"); asked directly at 2026-07-28
  the SDK answers the `InputRequiredResult` itself. They exercise the gateway's held calls:
  sampling, roots, a state across rounds, a tampered state, and a held session that declares
  only what the client declared. Also the schema tool's SEP-2106 keywords.
- `build_modern_fixture()`: a second fixture, served in the SDK's stateless mode, which the
  gateway reaches as a modern upstream (its `InputRequiredResult` relayed, its `requestState`
  sealed). Here go the scenarios whose results a held legacy call cannot produce: input
  requests under the suite's own keys (`user_name`), three at once, a new state every round, a
  first call that already carries the answers, a prompt that asks; and the stateless
  diagnostics (`-32021` at HTTP 400, no request on the response stream) and an `x-mcp-header`
  tool, whose `Mcp-Param-*` checks the SDK's stateless transport makes. The gateway federates
  it beside the stateful fixture under `MODERN_PREFIX` (one server only may go unprefixed), so
  its tools are named without it: `input_required_result_elicitation` is the suite's
  `test_input_required_result_elicitation`.

The expectations were read from the scenario descriptions and checks in the suite's `dist/`;
nothing of the suite is copied.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp import types
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample
from pydantic import BaseModel, Field

MODERN_FIXTURE_NAME = "mcp-gateway-conformance-fixture-2026"
# The gateway's prefix for the modern fixture: prefix + tool name = the name the suite calls.
MODERN_PREFIX = "test_"

ToolAnswer = types.CallToolResult | types.InputRequiredResult


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


# -- on the stateful fixture -------------------------------------------------------------------


class Confirmation(BaseModel):
    ok: bool = Field(description="Confirm?")


def _ask_capital() -> Sample:
    question = types.TextContent(type="text", text="What is the capital of France?")
    return Sample([types.SamplingMessage(role="user", content=question)], max_tokens=100)


def _ask_roots() -> ListRoots:
    return ListRoots()


def _ask_confirmation() -> Elicit[Confirmation]:
    return Elicit("Please confirm", Confirmation)


def _sample_if_declared(ctx: Context) -> Sample | None:
    # A server must not ask for what the client did not declare (SEP-2322): the question is
    # left out, not refused.
    declared = ctx.client_capabilities
    return _ask_capital() if declared is not None and declared.sampling is not None else None


def _elicit_if_declared(ctx: Context) -> Elicit[Confirmation] | None:
    declared = ctx.client_capabilities
    return _ask_confirmation() if declared is not None and declared.elicitation is not None else None


def _sampled_text(result: types.CreateMessageResult) -> str:
    content = result.content
    return content.text if isinstance(content, types.TextContent) else f"<{content.type}>"


def add_to_fixture(server: MCPServer) -> None:
    """The resolved tools above, and SEP-2106's keywords in the schema tool's listing."""

    @server.tool(description="Asks the client's LLM one question (sampling), then answers")
    def test_input_required_result_sampling(
        answer: Annotated[types.CreateMessageResult, Resolve(_ask_capital)],
    ) -> str:
        return f"The model said: {_sampled_text(answer)}"

    @server.tool(description="Asks the client for its roots, then lists them")
    def test_input_required_result_list_roots(
        roots: Annotated[types.ListRootsResult, Resolve(_ask_roots)],
    ) -> str:
        return "roots: " + ", ".join(str(root.uri) for root in roots.roots)

    @server.tool(description="Asks for a confirmation; the answer comes back with the call's state")
    def test_input_required_result_request_state(
        confirmation: Annotated[Confirmation, Resolve(_ask_confirmation)],
    ) -> str:
        return f"state-ok: confirmed={confirmation.ok}"

    @server.tool(description="Asks for a confirmation; an edited requestState must be refused")
    def test_input_required_result_tampered_state(
        confirmation: Annotated[Confirmation, Resolve(_ask_confirmation)],
    ) -> str:
        return f"confirmed={confirmation.ok}"

    @server.tool(description="Asks (sampling, elicitation) only what the client declared")
    def test_input_required_result_capabilities(
        sampled: Annotated[types.CreateMessageResult | None, Resolve(_sample_if_declared)],
        confirmation: Annotated[Confirmation | None, Resolve(_elicit_if_declared)],
    ) -> str:
        asked = [name for name, got in (("sampling", sampled), ("elicitation", confirmation)) if got is not None]
        return "asked: " + (", ".join(asked) or "nothing")

    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert tool is not None, "add_to_fixture runs after the fixture's own tools"
    tool.parameters = {**tool.parameters, **_SEP_2106_KEYWORDS}
    tool.parameters["$defs"]["address"]["$anchor"] = "address"


# SEP-2106: the 2020-12 vocabulary beyond SEP-1613's, which a listing must keep verbatim.
# Composition (allOf holding an anyOf) and a conditional: a contact method, then its detail.
_SEP_2106_KEYWORDS: dict[str, Any] = {
    "allOf": [{"anyOf": [{"required": ["name"]}, {"required": ["address"]}]}],
    "if": {"properties": {"name": {"const": "anonymous"}}, "required": ["name"]},
    "then": {"not": {"required": ["address"]}},
    "else": {},
}


# -- the modern (stateless) fixture -------------------------------------------------------------


def _elicit(message: str, field: str) -> types.ElicitRequest:
    schema = {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]}
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int) -> types.CreateMessageRequest:
    message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(messages=[message], max_tokens=max_tokens)
    )


def _accepted(ctx: Context, key: str, field: str) -> str | None:
    """The string `field` of an accepted elicitation answered under `key`, if there is one."""
    response = (ctx.input_responses or {}).get(key)
    if not isinstance(response, types.ElicitResult) or response.action != "accept":
        return None
    value = (response.content or {}).get(field)
    return value if isinstance(value, str) else None


def _rounds(ctx: Context) -> int:
    """Rounds answered so far, as this server wrote them into its state ("round-N")."""
    state = ctx.request_state or ""
    return int(state.removeprefix("round-")) if state.startswith("round-") and state[6:].isdigit() else 0


def build_modern_fixture() -> MCPServer:
    server = MCPServer(MODERN_FIXTURE_NAME, version="1.0.0", log_level="WARNING")

    @server.tool(description="Asks the user's name (key user_name), then greets them")
    def input_required_result_elicitation(ctx: Context) -> ToolAnswer:
        # The answer is read from the retry alone: a call that brings it (with other keys
        # this tool ignores) completes at once; one without it is asked again.
        name = _accepted(ctx, "user_name", "name")
        if name is None:
            return types.InputRequiredResult(input_requests={"user_name": _elicit("What is your name?", "name")})
        return _text(f"Hello, {name}!")

    @server.tool(description="Asks for a name, a sampled greeting and the roots at once")
    def input_required_result_multiple_inputs(ctx: Context) -> ToolAnswer:
        responses = ctx.input_responses or {}
        if ctx.request_state == "all-asked" and {"user_name", "greeting", "client_roots"} <= responses.keys():
            return _text(f"Got all three answers for {_accepted(ctx, 'user_name', 'name')}")
        requests: types.InputRequests = {
            "user_name": _elicit("What is your name?", "name"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": types.ListRootsRequest(),
        }
        return types.InputRequiredResult(input_requests=requests, request_state="all-asked")

    @server.tool(description="Two questions in two rounds, a new requestState each round")
    def input_required_result_multi_round(ctx: Context) -> ToolAnswer:
        rounds = _rounds(ctx)
        if rounds == 1 and _accepted(ctx, "step1", "name") is not None:
            request = _elicit("Step 2: What is your favorite color?", "color")
            return types.InputRequiredResult(input_requests={"step2": request}, request_state="round-2")
        if rounds == 2 and (color := _accepted(ctx, "step2", "color")) is not None:
            return _text(f"Both steps done: favourite colour {color}")
        request = _elicit("Step 1: What is your name?", "name")
        return types.InputRequiredResult(input_requests={"step1": request}, request_state="round-1")

    @server.prompt(description="A prompt that asks the user for its context first")
    def input_required_result_prompt(ctx: Context) -> list[UserMessage] | types.InputRequiredResult:
        context = _accepted(ctx, "user_context", "context")
        if context is None:
            request = _elicit("What context should the prompt use?", "context")
            return types.InputRequiredResult(input_requests={"user_context": request})
        return [UserMessage(f"Answer with this context in mind: {context}")]

    @server.tool(description="Needs sampling: a client that did not declare it gets -32021")
    def missing_capability(
        answer: Annotated[types.CreateMessageResult, Resolve(_ask_capital)],
    ) -> str:
        return f"The model said: {_sampled_text(answer)}"

    @server.tool(description="Asks for a confirmation (the suite watches the response stream)")
    def streaming_elicitation(
        confirmation: Annotated[Confirmation, Resolve(_ask_confirmation)],
    ) -> str:
        return f"confirmed={confirmation.ok}"

    @server.tool(description="Logs at info: sent only to a request that set a logLevel")
    async def logging_tool(ctx: Context) -> str:
        await ctx.info("logging_tool ran")
        return "logged"

    @server.tool(description="Echoes a region mirrored into the Mcp-Param-Region header")
    def custom_headers(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return f"region: {region}"

    return server


__all__ = ["MODERN_FIXTURE_NAME", "MODERN_PREFIX", "add_to_fixture", "build_modern_fixture"]
