-- The gateway's fast path for routed calls, run by Envoy's Lua filter in front of the ext_proc.
--
-- The router (Python, behind the ext_proc) makes every decision: it verifies the sealed gateway
-- session, applies the virtual server and Origin rules, matches the prefix, opens the backend
-- session. It hands each routed tools/call / prompts/get decision to this script as dynamic
-- metadata (`mcp_gateway.fast`); the script keeps it, per Envoy worker, for a short time
-- (`ttl_ms`, and never past the session's own end) under the exact inputs it was made from:
-- (gateway token, method, name, virtual server, Origin, Authorization). The next call with the same inputs
-- is applied here, in Envoy: prefix stripped from the body, the backend session and the
-- upstream's credential set, routed on `x-mcp-servername` + `x-mcp-fast-path`, a route that
-- skips the ext_proc. Anything the script is not sure of takes the slow path (the ext_proc),
-- which answers precisely: a body it cannot fully validate as strict JSON, an unknown token,
-- a header/body mismatch, a name it has not been told about. See docs/router.md, "Fast path".
--
-- Constants below the marker line are rendered in by mcp_gateway.router.xds.

local byte, find, sub, format = string.byte, string.find, string.sub, string.format

-- ---------------------------------------------------------------------------------------------
-- Strict JSON, conservatively: true only for bodies the router's own reader accepts too.
-- Refused here (→ slow path, never an error from here): non-ASCII bytes, \u escapes, numbers
-- with an exponent or more than 15 digits, strings over the limit, depth over the limit, a key
-- repeated in any object or written with an escape.

local FAIL = -1
-- Sessions held per worker; past this, everything is forgotten and refilled on demand.
local MAX_SESSIONS = 10000

local skip_value  -- forward declaration (recursive)

-- Byte loops rather than string.find patterns: LuaJIT compiles these; a pattern search is a
-- call into its interpreter (measured: the scan costs about half as much this way).

local function skip_ws(s, i)
  local c = byte(s, i)
  while c == 32 or c == 10 or c == 13 or c == 9 do
    i = i + 1
    c = byte(s, i)
  end
  return i
end

-- A string starting at i (the opening quote). Returns the index after the closing quote and
-- whether it held an escape.
local function skip_string(s, i, max_len)
  local j = i + 1
  local escaped = false
  while true do
    local c = byte(s, j)
    -- The end, a control character, or a non-ASCII byte (anywhere else, one fails the parse:
    -- only strings take any byte).
    if c == nil or c < 32 or c > 127 then return FAIL end
    if c == 34 then  -- closing quote
      if j - i - 1 > max_len then return FAIL end
      return j + 1, escaped
    elseif c == 92 then  -- backslash
      local e = byte(s, j + 1)
      -- " \ / b f n r t; \u (and anything else) is left to the router
      if e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110 or e == 114 or e == 116 then
        escaped = true
        j = j + 2
      else
        return FAIL
      end
    else
      j = j + 1
    end
  end
end

local function skip_digits(s, i)
  local c = byte(s, i)
  while c and c >= 48 and c <= 57 do
    i = i + 1
    c = byte(s, i)
  end
  return i
end

local function skip_number(s, i)
  local first = byte(s, i) == 45 and i + 1 or i
  local e = skip_digits(s, first)
  if e == first then return FAIL end
  if byte(s, first) == 48 and e > first + 1 then return FAIL end  -- leading zero
  local digits = e - first
  local j = e
  if byte(s, j) == 46 then  -- fraction
    local f = skip_digits(s, j + 1)
    if f == j + 1 then return FAIL end
    digits = digits + (f - j - 1)
    j = f
  end
  local c = byte(s, j)
  if c == 101 or c == 69 or digits > 15 then return FAIL end
  return j
end

-- `visit(s, key, at, limits, into, key_at)`, when given, reads each member's value itself
-- (returning the index after it, or FAIL; `key_at` is where the member's key begins): how
-- read_call looks at the members it cares about in the same single pass (a top-level function,
-- not a closure: LuaJIT compiles no closure creation).
local function skip_object(s, i, depth, limits, visit, into)
  if depth > limits.max_depth then return FAIL end
  local seen = {}
  local j = skip_ws(s, i + 1)
  if byte(s, j) == 125 then return j + 1 end
  while true do
    if byte(s, j) ~= 34 then return FAIL end
    local k, escaped = skip_string(s, j, limits.max_string)
    if k == FAIL or escaped then return FAIL end
    local key = sub(s, j + 1, k - 2)
    if seen[key] then return FAIL end
    seen[key] = true
    local key_at = j
    j = skip_ws(s, k)
    if byte(s, j) ~= 58 then return FAIL end
    if visit then
      j = visit(s, key, skip_ws(s, j + 1), limits, into, key_at)
    else
      j = skip_value(s, skip_ws(s, j + 1), depth, limits)
    end
    if j == FAIL then return FAIL end
    j = skip_ws(s, j)
    local c = byte(s, j)
    if c == 125 then return j + 1 end
    if c ~= 44 then return FAIL end
    j = skip_ws(s, j + 1)
  end
end

local function skip_array(s, i, depth, limits)
  if depth > limits.max_depth then return FAIL end
  local j = skip_ws(s, i + 1)
  if byte(s, j) == 93 then return j + 1 end
  while true do
    j = skip_value(s, j, depth, limits)
    if j == FAIL then return FAIL end
    j = skip_ws(s, j)
    local c = byte(s, j)
    if c == 93 then return j + 1 end
    if c ~= 44 then return FAIL end
    j = skip_ws(s, j + 1)
  end
end

skip_value = function(s, i, depth, limits)
  local c = byte(s, i)
  if c == 34 then
    local k = skip_string(s, i, limits.max_string)
    return k
  elseif c == 123 then
    return skip_object(s, i, depth + 1, limits)
  elseif c == 91 then
    return skip_array(s, i, depth + 1, limits)
  elseif c == 116 then
    return sub(s, i, i + 3) == "true" and i + 4 or FAIL
  elseif c == 102 then
    return sub(s, i, i + 4) == "false" and i + 5 or FAIL
  elseif c == 110 then
    return sub(s, i, i + 3) == "null" and i + 4 or FAIL
  elseif c == 45 or (c and c >= 48 and c <= 57) then
    return skip_number(s, i)
  end
  return FAIL
end

local ROUTED = { ["tools/call"] = true, ["prompts/get"] = true }
local REQUEST_MEMBERS = { jsonrpc = true, id = true, method = true, params = true }

-- The 2026-07-28 envelope in params._meta (protocol/_modern.py): where read_call keeps each
-- value's raw JSON text (a modern call's decision key), and what a legacy upstream does not get.
local ENVELOPE = {
  ["io.modelcontextprotocol/protocolVersion"] = "meta_version",
  ["io.modelcontextprotocol/clientCapabilities"] = "meta_caps",
  ["io.modelcontextprotocol/clientInfo"] = "meta_info",
}

-- A member of params._meta: each one's span kept (a legacy upstream gets _meta without the
-- envelope), the envelope's values' text too.
local function meta_member(s, key, at, limits, call, key_at)
  local e = skip_value(s, at, 3, limits)
  if e == FAIL then return FAIL end
  local slot = ENVELOPE[key]
  if slot then call[slot] = sub(s, at, e - 1) else call.meta_extra = true end
  local members = call.meta_members
  members[#members + 1] = { key_at, e - 1, slot ~= nil }
  return e
end

-- A member of params: `name` must be a plain, non-empty string; its span is what gets rewritten.
-- A multi-round-trip retry (requestState, inputResponses) is always the router's (the broker's).
local function params_member(s, key, at, limits, call)
  if key == "requestState" or key == "inputResponses" then return FAIL end
  if key == "_meta" and byte(s, at) == 123 then
    call.meta_members = {}
    local e = skip_object(s, at, 3, limits, meta_member, call)
    if e ~= FAIL then call.meta_first, call.meta_last = at, e - 1 end
    return e
  end
  local e = skip_value(s, at, 2, limits)
  if key == "name" and e ~= FAIL then
    local backslash = find(s, "\\", at, true)
    if byte(s, at) ~= 34 or e - at < 3 or (backslash and backslash < e) then return FAIL end
    call.name_first, call.name_last = at + 1, e - 2
    call.name = sub(s, at + 1, e - 2)
  end
  return e
end

-- A member of the message: only those a request may have, each as the router requires it.
local function message_member(s, key, at, limits, call)
  if not REQUEST_MEMBERS[key] then return FAIL end
  if key == "params" then
    if byte(s, at) ~= 123 then return FAIL end
    return skip_object(s, at, 2, limits, params_member, call)
  end
  local e = skip_value(s, at, 1, limits)
  if e == FAIL then return FAIL end
  local raw = sub(s, at, e - 1)
  if key == "jsonrpc" then
    if raw ~= '"2.0"' then return FAIL end
    call.jsonrpc = true
  elseif key == "method" then
    call.method = sub(raw, 2, -2)
    if byte(raw, 1) ~= 34 or not ROUTED[call.method] then return FAIL end
  else  -- id: a string, or an integer
    local c = byte(raw, 1)
    if c ~= 34 and find(raw, ".", 1, true) then return FAIL end
    if c ~= 34 and c ~= 45 and (c < 48 or c > 57) then return FAIL end
    call.id, call.id_first, call.id_last = raw, at, e - 1
  end
  return e
end

-- The routed call a body is, or nil. Returns a table: method, name, the name's span
-- (first and last byte of its text inside the quotes) and the id's raw JSON text.
local function read_call(s, limits)
  -- Non-ASCII bytes are refused where they are met (skip_string; outside strings no byte but
  -- JSON's own passes): measured, a pattern search over the body first cost more than the
  -- whole parse.
  local i = skip_ws(s, 1)
  if byte(s, i) ~= 123 then return nil end  -- batches and scalars: the router's
  local call = {}
  local e = skip_object(s, i, 1, limits, message_member, call)
  if e == FAIL or skip_ws(s, e) <= #s then return nil end  -- invalid, or trailing data
  if not (call.jsonrpc and call.method and call.id and call.name) then return nil end
  return call
end

-- ---------------------------------------------------------------------------------------------
-- Decisions, per worker

local sessions = {}      -- gateway token → { [decision key] = decision }
local session_count = 0
-- 2026-07-28 ("modern") clients have no session: their decisions are held under this
-- pseudo-token, which no gateway token can be (a header value has no "\n"), at most
-- MAX_SESSIONS of them (then they start over, like the sessions).
local MODERN = "\n"
-- The revisions that open with initialize (protocol/_modern.py HANDSHAKE_VERSIONS).
local HANDSHAKE_VERSIONS = {
  ["2024-11-05"] = true, ["2025-03-26"] = true, ["2025-06-18"] = true, ["2025-11-25"] = true,
}
local modern_count = 0
local generation = nil   -- the router config the decisions were made under
local settings = nil     -- the POST route's settings (limits), read when its name changes
local settings_route = nil

local function forget_all()
  sessions, session_count, modern_count = {}, 0, 0
end

local function now_ms(handle)
  return handle:timestamp()
end

-- "\n" can be in none of the parts (header values, JSON string text without escapes); a NUL
-- would not survive the trip through dynamic metadata. The client's Authorization is part of
-- the key: with inbound OAuth the router decided for that bearer token (its scopes), and a call
-- with another token, or none, must reach the router again (docs/auth.md).
local function decision_key(method, name, virtual, origin, authorization)
  return method .. "\n" .. name .. "\n" .. (virtual or "") .. "\n" .. (origin or "") .. "\n" .. (authorization or "")
end

-- When a decision learnt at `now` stops being used: its lifetime, and never past `not_after`
-- (epoch ms; the bearer token's expiry, 0 when there is none).
local function expiry(now, ttl_ms, not_after)
  local expires = now + ttl_ms
  if type(not_after) == "number" and not_after > 0 and not_after < expires then
    expires = not_after
  end
  return expires
end

-- A bearer token longer than this is left to the router (which refuses what it cannot verify).
local MAX_AUTHORIZATION = 8192

local function lookup(token, key, now)
  local held = sessions[token]
  if held == nil then return nil end
  local decision = held[key]
  if decision == nil then return nil end
  if decision.expires <= now then
    held[key] = nil
    return nil
  end
  if decision.renew_at <= now and not decision.renewing then
    -- Its last fifth: one call asks the router again while the others still use it, so a busy
    -- session never has all its calls miss at once when it expires.
    decision.renewing = true
    return nil
  end
  return decision
end

local function remember(token, key, decision, max_sessions)
  local held = sessions[token]
  if held == nil then
    if session_count >= max_sessions then forget_all() end  -- bounded; refilled on demand
    held = {}
    sessions[token] = held
    session_count = session_count + 1
  end
  if token == MODERN and held[key] == nil then
    if modern_count >= max_sessions then
      held = {}
      sessions[token] = held
      modern_count = 0
    end
    modern_count = modern_count + 1
  end
  held[key] = decision
end

local function forget_session(token)
  if sessions[token] ~= nil then
    sessions[token] = nil
    session_count = session_count - 1
    if token == MODERN then modern_count = 0 end
  end
end

-- What else a modern call's decision read (router/modern_clients.py route_modern): the version
-- header, the mirrored method and name exactly as sent (plain or base64: only the pair the
-- router accepted matches; any other pair, a mismatch included, is the router's to answer), and
-- the envelope's values as raw JSON text (each a complete JSON value, so the "\n"-joined key
-- is unambiguous). The declared features are in the capabilities' text: the router hands over
-- decisions only for calls declaring none of roots, sampling, elicitation.
local function present(value)
  return value and ("=" .. value) or "-"
end

local function modern_key(base, headers, call)
  return base .. "\n" .. present(headers:get("mcp-protocol-version")) .. "\n" .. present(headers:get("mcp-method"))
    .. "\n" .. present(headers:get("mcp-name")) .. "\n" .. present(call.meta_version) .. "\n"
    .. present(call.meta_caps) .. "\n" .. present(call.meta_info)
end

-- `text` with the spans { first, last, replacement } replaced (they do not overlap; an insertion
-- is { at, at - 1, text }).
local function splice(text, edits)
  for i = 2, #edits do  -- at most three: an insertion sort
    local edit, j = edits[i], i - 1
    while j >= 1 and edits[j][1] > edit[1] do
      edits[j + 1] = edits[j]
      j = j - 1
    end
    edits[j + 1] = edit
  end
  local out, at = {}, 1
  for i = 1, #edits do
    local edit = edits[i]
    out[#out + 1] = sub(text, at, edit[1] - 1)
    out[#out + 1] = edit[3]
    at = edit[2] + 1
  end
  out[#out + 1] = sub(text, at)
  return table.concat(out)
end

-- params._meta without the envelope (router/modern_clients.py for_legacy_upstream): what a
-- legacy upstream gets on the gateway's shared session. An empty `_meta` stays `{}`.
local function meta_without_envelope(text, call)
  local kept, members = {}, call.meta_members
  for i = 1, #members do
    local member = members[i]
    if not member[3] then kept[#kept + 1] = sub(text, member[1], member[2]) end
  end
  return "{" .. table.concat(kept, ",") .. "}"
end

-- ---------------------------------------------------------------------------------------------
-- The request

-- What a fast call's answer needs to replay it, by call number; a bounded ring per worker (an
-- answer later than PENDING calls of its worker finds its entry gone and cannot be replayed).
local PENDING = 4096
local pending = {}
local calls = 0

local SESSION, FAST, LEARN = "mcp-session-id", "x-mcp-fast-path", "x-mcp-fast-path-learn"
local SLOW = "mcp-gateway-slow-path"  -- set on the script's own replays: always the ext_proc's
local META = "mcp_gateway_fast"
-- The script's own request to have an upstream's requestState sealed (a modern upstream's
-- input_required answer): the router answers it (router/modern_exchange.py) when it carries
-- SEAL_TO_ROUTER, which only this script sets, and only on its own internal listener.
local SEAL, SEAL_TO_ROUTER = "mcp-gateway-seal", "x-mcp-seal"

-- What a fast call sends upstream in place of the client's own: the upstream's credential (or
-- none), and neither the virtual server header nor the Origin. Both were checked by the router
-- when it decided (they are part of the key); the upstream's client is the gateway
-- (router/decision.py forward() drops them too).
local function as_the_gateways_request(headers, decision, virtual, origin)
  if decision.authorization ~= "" then
    headers:replace("authorization", decision.authorization)
  else
    headers:remove("authorization")
  end
  if virtual then headers:remove("x-mcp-virtualserver") end
  if origin then headers:remove("origin") end
end

-- A modern call the router decided before (router/modern_exchange.py hands the decision over):
-- to a modern upstream as the client sent it (its envelope passes), the prefix stripped in the
-- body and in Mcp-Name, at the upstream's revision; to a legacy upstream on the gateway's shared
-- backend session, under an id of the gateway's (several clients share that session and their
-- ids may collide there), without the envelope in _meta, at the session's revision. The answer
-- gets the client's id back, or its requestState sealed (envoy_on_response).
local function apply_modern(handle, headers, body, text, call, decision, virtual, origin, authorization)
  calls = calls + 1
  local number = calls
  local edits = { { call.name_first, call.name_last, decision.routed } }
  local gateway_id = nil
  if decision.kind == "legacy" then
    -- Unique per call on every worker: the nonce is the router's, made for this worker's copy
    -- of the decision alone; the number counts this worker's calls.
    gateway_id = '"mcpgw-fast:' .. decision.nonce .. ":" .. number .. '"'
    edits[2] = { call.id_first, call.id_last, gateway_id }
    if call.meta_first then edits[3] = { call.meta_first, call.meta_last, meta_without_envelope(text, call) } end
  end
  body:setBytes(splice(text, edits))
  local mirrored_method, mirrored_name = headers:get("mcp-method"), headers:get("mcp-name")
  local entry = {
    number = number, kind = decision.kind, server = decision.server, id = call.id,
    on_session = decision.backend ~= "",
    gateway_id = gateway_id, binding = decision.binding, body = text,
    path = headers:get(":path"), authority = headers:get(":authority"),
    virtual = virtual or "", origin = origin or "", timeout = decision.timeout,
    authorization = authorization or "", version = headers:get("mcp-protocol-version") or "",
    mirrored_method = mirrored_method, mirrored_name = mirrored_name,
  }
  headers:replace("x-mcp-servername", decision.server)
  headers:replace(FAST, "1")
  headers:replace("x-mcp-method", call.method)
  headers:replace("x-mcp-toolname", decision.routed)
  -- Rate limits as on the router's modern calls: by name, with the id for a 429's body; no
  -- session (a modern client has none).
  headers:replace("x-mcp-name", call.name)
  headers:replace("x-mcp-request-id", call.id)
  headers:replace(":authority", decision.authority)
  headers:replace(":path", decision.path)
  headers:replace("mcp-protocol-version", decision.version)
  if decision.backend ~= "" then headers:replace(SESSION, decision.backend) end
  as_the_gateways_request(headers, decision, virtual, origin)
  if decision.kind == "modern" then
    headers:replace("mcp-method", call.method)
    headers:replace("mcp-name", decision.name_header)
  elseif mirrored_name then
    headers:replace("mcp-name", decision.name_header)
  end
  handle:clearRouteCache()
  pending[number % PENDING] = entry
  local metadata = handle:streamInfo():dynamicMetadata()
  if gateway_id and decision.mark ~= "" then
    -- On the shared backend session: the access logger reports this mark if the client leaves
    -- mid-call, and the router cancels the call there under the id the upstream saw (a session
    -- mark and the gateway's id, as router/accesslog.py reads a fast call's). A modern
    -- upstream's call needs none: Envoy resetting its request is the revision's cancellation.
    metadata:set("mcp_gateway", "call", decision.mark .. "\n" .. gateway_id)
  end
  -- This finds the entry above, and the client's id. In the namespace the answer reads first:
  -- one metadata read (a table built anew) per answer.
  metadata:set("mcp_gateway", "modern", number .. "\n" .. call.id)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local method = headers:get(":method")
  if method == "DELETE" then
    -- The session ends: this worker stops at once; the others within ttl_ms.
    local token = headers:get(SESSION)
    if token then forget_session(token) end
    return
  end
  if method ~= "POST" then return end
  local seal = headers:get(SEAL)
  if seal ~= nil then
    headers:remove(SEAL)
    if sub(handle:streamInfo():downstreamLocalAddress(), 1, 8) == "envoy://" then
      headers:replace(SEAL_TO_ROUTER, seal)
    end
    return
  end
  -- The route's name carries the generation (router/xds.py): its metadata, a table built
  -- anew on every read, is read only when the name changes.
  local route = handle:streamInfo():routeName()
  if route ~= settings_route then
    local read = handle:metadata():get("fast")
    settings, settings_route = read, route
  end
  local context = settings
  local gen = context and context.generation
  if gen == nil then return end  -- fast path off for this route
  if gen ~= generation then
    forget_all()
    generation = gen
  end
  -- A replay (or a client) asking for the ext_proc: it gets it, and its answer still teaches.
  local forced = headers:get(SLOW) ~= nil
  if forced then
    headers:remove(SLOW)
    -- Our own replay comes over the internal listener (a client's request never does): the
    -- access logger of routed calls logs the client's call, not this one (router/call_log.py).
    if sub(handle:streamInfo():downstreamLocalAddress(), 1, 8) == "envoy://" then
      handle:streamInfo():dynamicMetadata():set("mcp_gateway", "replay", "1")
    end
  end
  local token = headers:get(SESSION)
  local modern = token == nil  -- a 2026-07-28 client, or a request the router refuses
  if modern then token = MODERN end
  local length = tonumber(headers:get("content-length") or "")
  if #token > 256 or length == nil or length > context.max_body then return end
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  local call = read_call(text, context)
  if call == nil then return end
  headers = handle:headers()  -- the wrapper taken before body() does not outlive the wait
  -- 2026-07-28 mirrors method and name in headers: only an exact, plain match stays here.
  local mirrored_method, mirrored_name = headers:get("mcp-method"), headers:get("mcp-name")
  if not modern and ((mirrored_method and mirrored_method ~= call.method) or (mirrored_name and mirrored_name ~= call.name)) then
    return
  end
  -- A session names its handshake revision or none; any other version header is the router's
  -- to refuse (protocol/_modern.py session_version_refusal), never the upstream's to read.
  local version = headers:get("mcp-protocol-version")
  if not modern and version ~= nil and not HANDSHAKE_VERSIONS[version] then return end
  local virtual, origin = headers:get("x-mcp-virtualserver"), headers:get("origin")
  local authorization = headers:get("authorization")
  if authorization and #authorization > MAX_AUTHORIZATION then return end
  local key = decision_key(call.method, call.name, virtual, origin, authorization)
  if modern then key = modern_key(key, headers, call) end
  local now = now_ms(handle)
  local decision = (not forced) and lookup(token, key, now) or nil
  local metadata = handle:streamInfo():dynamicMetadata()
  if decision == nil then
    -- Slow path; the response side keeps the router's decision under this key. The header asks
    -- the router for its decision (an Envoy without this filter never gets one: it would only
    -- sit in the metadata, credential and all); the router removes it before any upstream.
    metadata:set(META, "miss", { token = token, key = key, gen = gen })
    headers:replace(LEARN, "1")
    return
  end
  if modern then
    -- A modern upstream's answer is held whole here (its requestState may need sealing): a call
    -- that asked for messages before its result (a progressToken, a logLevel) is the router's.
    if decision.kind == "modern" and call.meta_extra then return end
    return apply_modern(handle, headers, body, text, call, decision, virtual, origin, authorization)
  end
  local client_path, client_authority = headers:get(":path"), headers:get(":authority")
  body:setBytes(sub(text, 1, call.name_first - 1) .. decision.routed .. sub(text, call.name_last + 1))
  headers:replace("x-mcp-servername", decision.server)
  headers:replace(FAST, "1")
  headers:replace("x-mcp-method", call.method)
  headers:replace("x-mcp-toolname", decision.routed)
  -- For Envoy's rate limits, after this filter (router/rate_limits.py), as the router's forward()
  -- sets them: the session (its token was verified when the decision was made), the name as the
  -- client called it, the id's JSON text (for the 429's body). The routes drop them upstream.
  headers:replace("x-mcp-session", token)
  headers:replace("x-mcp-name", call.name)
  headers:replace("x-mcp-request-id", call.id)
  headers:replace(":authority", decision.authority)
  headers:replace(":path", decision.path)
  if decision.backend ~= "" then
    headers:replace(SESSION, decision.backend)
  else
    headers:remove(SESSION)
  end
  as_the_gateways_request(headers, decision, virtual, origin)
  if mirrored_name then headers:replace("mcp-name", decision.routed) end
  handle:clearRouteCache()
  calls = calls + 1
  pending[calls % PENDING] = {
    number = calls, token = token, server = decision.server, id = call.id,
    body = text, path = client_path, authority = client_authority,
    virtual = virtual or "", origin = origin or "", timeout = decision.timeout,
    authorization = authorization or "",
    version = headers:get("mcp-protocol-version") or "",
  }
  -- The one metadata write of a fast call: the access logger reports this mark if the client
  -- leaves mid-call (router/accesslog.py reads the id after the first "\n"); the answer finds
  -- its entry above by the number after the second. No token, no credential in it.
  metadata:set("mcp_gateway", "call", decision.mark .. "\n" .. call.id .. "\n" .. calls)
end

-- ---------------------------------------------------------------------------------------------
-- The response

local function replace_answer(handle, status, content_type, text)
  local body = handle:body()  -- first: a header wrapper taken before it would be stale after
  if body ~= nil then body:setBytes(text) end
  local headers = handle:headers()
  headers:replace(":status", status)
  headers:replace("content-type", content_type)
  headers:replace("content-length", tostring(#text))
end

-- The upstream no longer knows the backend session (it restarted): the call again, through
-- the ext_proc, which opens a new backend session and replays once (router/backends.py).
local function replay(handle, call)
  local headers = {
    [":method"] = "POST", [":path"] = call.path, [":authority"] = call.authority,
    ["content-type"] = "application/json", ["accept"] = "application/json, text/event-stream",
    [SLOW] = "1",
  }
  if call.token then headers[SESSION] = call.token end  -- a modern call has none
  if call.mirrored_method then headers["mcp-method"] = call.mirrored_method end
  if call.mirrored_name then headers["mcp-name"] = call.mirrored_name end
  if call.version ~= "" then headers["mcp-protocol-version"] = call.version end
  if call.virtual ~= "" then headers["x-mcp-virtualserver"] = call.virtual end
  if call.origin ~= "" then headers["origin"] = call.origin end
  -- The client's own bearer token: the router checks it again (the upstream's replaced it).
  if call.authorization ~= "" then headers["authorization"] = call.authorization end
  handle:body()  -- hold the upstream's own answer back (buffered) while the replay runs
  local answer, text = handle:httpCall("mcp_gateway_self", headers, call.body,
    { timeout_ms = call.timeout, send_xff = false })
  if answer == nil or answer[":status"] == nil or text == nil or text == "" then
    return false
  end
  replace_answer(handle, answer[":status"], answer["content-type"] or "application/json", text)
  return true
end

local function unavailable(handle, hit)
  -- The router's JSON-RPC error for an upstream that did not answer, in the same words.
  local error = format('{"jsonrpc":"2.0","id":%s,"error":{"code":-32603,"message":"Upstream \'%s\' is unavailable"}}',
    hit.id, hit.server)
  replace_answer(handle, "200", "application/json", error)
end

local function learn(handle, miss)
  local routed = handle:streamInfo():dynamicMetadata():get("mcp_gateway")
  local fill = routed and routed.fast
  if type(fill) ~= "table" then return end
  -- A decision for a modern call (it has a kind) is kept only for one, and the other way round.
  if fill.generation == miss.gen and miss.gen == generation and (miss.token == MODERN) == (fill.kind ~= nil) then
    fill.expires = expiry(now_ms(handle), fill.ttl_ms, fill.not_after)
    fill.renew_at = fill.expires - fill.ttl_ms / 5
    remember(miss.token, miss.key, fill, MAX_SESSIONS)
  end
  -- It holds the upstream's credential: not for the access loggers that read metadata.
  handle:streamInfo():dynamicMetadata():set("mcp_gateway", "fast", "")
end

-- ---------------------------------------------------------------------------------------------
-- An upstream's list changed, told inside a routed call's SSE answer

local CHANGED = "list_changed"  -- notifications/{tools,prompts,resources}/list_changed
local RELIST_TIMEOUT_MS = 30000  -- the broker bounds its own wait by the server's timeout

-- The chunk that tells the change is held until the broker has re-listed that upstream
-- (broker/internal.py, POST /internal/relist): a client listing the moment it reads the
-- notification sees the new list. Every other chunk passes as it comes.
local function relist(handle, server)
  handle:httpCall("mcp_broker", {
    [":method"] = "POST", [":path"] = "/internal/relist?server=" .. server,
    [":authority"] = "mcp_broker", ["x-mcp-internal"] = "relist",
  }, "", { timeout_ms = RELIST_TIMEOUT_MS, send_xff = false })
end

local function relist_before_telling(handle, server)
  local tail = ""
  for chunk in handle:bodyChunks() do
    local size = chunk:length()
    if size > 0 then
      local text = tail .. chunk:getBytes(0, size)
      if find(text, CHANGED, 1, true) then
        relist(handle, server)
        tail = ""
      else
        tail = sub(text, -(#CHANGED - 1))  -- the word may straddle two chunks
      end
    end
  end
end

-- Envoy's 429 when a rate limit refused the call (router/rate_limits.py): its JSON-RPC error
-- stands. Only asked of answers that are not the upstream's (an upstream's header proves nothing).
local function refused_by_rate_limit(headers)
  return headers:get(":status") == "429" and headers:get("x-mcp-rate-limited") ~= nil
end

-- Which upstream answered, from the mark its route puts on every answer ("<server> via_upstream").
local function answering_server(headers)
  local mark = headers:get("x-mcp-upstream")
  return mark and string.match(mark, "^(%S+) via_upstream$")
end

local function watch_if_streaming(handle, headers, server)
  if server ~= nil and find(headers:get("content-type") or "", "text/event-stream", 1, true) then
    relist_before_telling(handle, server)
  end
end

-- ---------------------------------------------------------------------------------------------
-- A modern fast call's answer, rewritten as the router's ModernAnswer does (router/modern_clients.py)

-- Reading an upstream's answer loosely (any bytes in strings, any escape): the index after the
-- JSON value at i, or nil when the value does not end within `s`.
local function loose_skip(s, i)
  local c = byte(s, i)
  if c == nil then return nil end
  if c == 34 then
    local j = i + 1
    while true do
      c = byte(s, j)
      if c == nil then return nil end
      if c == 92 then j = j + 2 elseif c == 34 then return j + 1 else j = j + 1 end
    end
  end
  if c == 123 or c == 91 then
    local depth, j = 0, i
    while true do
      c = byte(s, j)
      if c == nil then return nil end
      if c == 34 then
        j = loose_skip(s, j)
        if j == nil then return nil end
      else
        if c == 123 or c == 91 then
          depth = depth + 1
        elseif c == 125 or c == 93 then
          depth = depth - 1
          if depth == 0 then return j + 1 end
        end
        j = j + 1
      end
    end
  end
  local j = i
  while true do
    c = byte(s, j)
    if c == nil or c == 44 or c == 125 or c == 93 or c == 58 or c == 32 or c == 10 or c == 13 or c == 9 then return j end
    j = j + 1
  end
end

-- The members of the object at i, loosely: { key, first, last } each (the value's span), or nil.
local function loose_members(s, i)
  local members = {}
  local j = skip_ws(s, i + 1)
  if byte(s, j) == 125 then return members end
  while true do
    if byte(s, j) ~= 34 then return nil end
    local k = loose_skip(s, j)
    if k == nil then return nil end
    local key = sub(s, j + 1, k - 2)
    j = skip_ws(s, k)
    if byte(s, j) ~= 58 then return nil end
    local v = skip_ws(s, j + 1)
    local e = loose_skip(s, v)
    if e == nil or e == v then return nil end
    members[#members + 1] = { key, v, e - 1 }
    j = skip_ws(s, e)
    local c = byte(s, j)
    if c == 125 then return members end
    if c ~= 44 then return nil end
    j = skip_ws(s, j + 1)
  end
end

-- A legacy upstream's JSON-RPC message as the modern client reads it (legacy_answer): its own
-- id for the gateway's, and `resultType: "complete"` on a result without one. nil: not the
-- answer to this call (another message of the stream), left as it is.
local function restore_id(payload, gateway_id, client_id)
  local i = skip_ws(payload, 1)
  if byte(payload, i) ~= 123 then return nil end
  local members = loose_members(payload, i)
  if members == nil then return nil end
  local edits, matched = {}, false
  for n = 1, #members do
    local key, first, last = members[n][1], members[n][2], members[n][3]
    if key == "id" and sub(payload, first, last) == gateway_id then
      matched = true
      edits[#edits + 1] = { first, last, client_id }
    elseif key == "result" and byte(payload, first) == 123 then
      local inner = loose_members(payload, first)
      local typed = inner == nil
      for m = 1, inner and #inner or 0 do
        if inner[m][1] == "resultType" then typed = true end
      end
      if not typed then
        edits[#edits + 1] = { first + 1, first, #inner == 0 and '"resultType":"complete"' or '"resultType":"complete",' }
      end
    end
  end
  if not matched then return nil end
  return splice(payload, edits)
end

-- One SSE event with the message in its data restored (several data lines are one message:
-- joined, and written back as one line; a newline between JSON tokens is only whitespace).
local function restore_in_event(event, call)
  local out, payload, data_at, at, n = {}, {}, nil, 1, #event
  while at <= n do
    local s, e = find(event, "\r?\n", at)
    local line_end, next_at = (s or n + 1) - 1, (e or n) + 1
    if sub(event, at, at + 4) == "data:" then
      local value = sub(event, at + 5, line_end)
      if byte(value, 1) == 32 then value = sub(value, 2) end
      payload[#payload + 1] = value
      if data_at == nil then
        out[#out + 1] = ""
        data_at = #out
        out[#out + 1] = sub(event, line_end + 1, next_at - 1)
      end
    else
      out[#out + 1] = sub(event, at, next_at - 1)
    end
    at = next_at
  end
  if data_at == nil then return event end
  local restored = restore_id(table.concat(payload, "\n"), call.gateway_id, call.id)
  if restored == nil then return event end
  if #payload > 1 then restored = (string.gsub(restored, "[\r\n]", " ")) end
  out[data_at] = "data: " .. restored
  return table.concat(out)
end

-- Where the last complete SSE event of `text` ends (0: none yet).
local function events_end(text)
  local last, at = 0, 1
  while true do
    local _, e = find(text, "\r?\n\r?\n", at)
    if e == nil then return last end
    last, at = e, e + 1
  end
end

local function restore_in_events(unit, call)
  local out, at, n = {}, 1, #unit
  while at <= n do
    local _, e = find(unit, "\r?\n\r?\n", at)
    local last = e or n
    local event = sub(unit, at, last)
    if find(event, call.gateway_id, 1, true) then event = restore_in_event(event, call) end
    out[#out + 1] = event
    at = last + 1
  end
  return table.concat(out)
end

-- Whether `text` holds a whole JSON value (and only whitespace after it).
local function json_complete(text)
  local last = #text
  local c = byte(text, last)
  while c == 32 or c == 10 or c == 13 or c == 9 do
    last = last - 1
    c = byte(text, last)
  end
  if c ~= 125 and c ~= 93 then return false end  -- cheap: most chunks end inside the value
  local e = loose_skip(text, skip_ws(text, 1))
  return e ~= nil and e == last + 1
end

local SEAL_TIMEOUT_MS = 10000

-- A modern upstream's answer that may carry an input_required result: its requestState sealed
-- by the router (sealed_input_required), over this Envoy's internal listener. The router's
-- reader decides, so any escape in the text (an escaped key or value) goes there too. If it
-- cannot, the client gets the router's error for the call, never the upstream's raw state.
local function sealed(handle, call, unit, sse)
  local answer, text = handle:httpCall("mcp_gateway_self", {
    [":method"] = "POST", [":path"] = call.path, [":authority"] = call.authority,
    ["content-type"] = sse and "text/event-stream" or "application/json", [SEAL] = call.binding,
  }, unit, { timeout_ms = SEAL_TIMEOUT_MS, send_xff = false })
  if answer ~= nil and answer[":status"] == "200" and text ~= nil then return text end
  local error = format('{"jsonrpc":"2.0","id":%s,"error":{"code":-32603,"message":"Upstream \'%s\' is unavailable"}}',
    call.id, call.server)
  return sse and ("event: message\ndata: " .. error .. "\n\n") or error
end

local function restored(call, unit, sse)
  if not find(unit, call.gateway_id, 1, true) then return unit end
  if sse then return restore_in_events(unit, call) end
  return restore_id(unit, call.gateway_id, call.id) or unit
end

-- A legacy upstream's answer unit by unit, streamed: an SSE answer's events as each completes
-- (the incomplete tail held back: a client drops an event the stream ends inside anyway), so
-- progress arrives as the upstream sends it; a JSON answer once whole (its content-length, or
-- its value closed). A list change told in an event is re-listed before that event passes, as
-- for other calls; but whatever arrives while the script waits for the broker passes unseen,
-- unrestored. So an event telling a change is held back until the call's own answer, and
-- passes with it, the broker asked then (only the stream's end can come after that).
local function restore_answer(handle, call, sse, expected)
  local held, seen, told, answered = "", 0, "", false
  for chunk in handle:bodyChunks() do
    local size = chunk:length()
    if size > 0 then
      local text = held .. chunk:getBytes(0, size)
      seen = seen + size
      local upto
      if sse then
        upto = events_end(text)
      elseif expected then
        upto = seen >= expected and #text or 0
      else
        upto = json_complete(text) and #text or 0
      end
      held = sub(text, upto + 1)
      if upto == 0 then
        chunk:setBytes("")
      else
        local unit = sub(text, 1, upto)
        local changed = sse and find(unit, CHANGED, 1, true) ~= nil
        answered = answered or find(unit, call.gateway_id, 1, true) ~= nil
        if changed and not answered then
          told = told .. unit
          chunk:setBytes("")
        else
          chunk:setBytes(told .. restored(call, unit, sse))
          if changed or told ~= "" then relist(handle, call.server) end
          told = ""
        end
      end
    end
  end
end

-- A legacy upstream's JSON answer up to this size is read whole (well under Envoy's buffer
-- limit); a larger one, or one of unknown length, streams through restore_answer.
local WHOLE_ANSWER = 65536

local function modern_answer(handle, mark)
  local number = tonumber(string.match(mark, "^(%d+)\n"))
  local slot = number % PENDING
  local call = pending[slot]
  if call ~= nil and call.number == number then pending[slot] = nil else call = nil end
  local headers = handle:headers()
  if call == nil or headers:get("x-mcp-upstream") ~= call.server .. " via_upstream" then
    -- Envoy's own answer (upstream down, refused), or one after PENDING later calls of this
    -- worker: never the upstream's answer unrewritten.
    if not refused_by_rate_limit(headers) then
      unavailable(handle, call or { id = string.match(mark, "\n(.*)$"), server = "upstream" })
    end
    handle:headers():remove(SESSION)
    return
  end
  if headers:get(":status") == "404" and call.on_session then
    -- The shared backend session is gone upstream (a restart, the reaper): every modern
    -- decision holds it. The call again through the router, which opens a new one.
    forget_session(MODERN)
    if not replay(handle, call) then unavailable(handle, call) end
    handle:headers():remove(SESSION)
    return
  end
  headers:remove(SESSION)  -- the shared backend session's id never reaches a client
  local content_type = headers:get("content-type") or ""
  local sse = find(content_type, "text/event-stream", 1, true) ~= nil
  if not sse and not find(content_type, "json", 1, true) then return end  -- no message in it
  if call.kind == "legacy" then
    local expected = tonumber(headers:get("content-length") or "")
    if not sse and expected and expected <= WHOLE_ANSWER then
      -- A JSON answer of a known, small length: read whole, one wait (measured: cheaper for
      -- Envoy than the chunk loop, which waits once more for the stream's end).
      local body = handle:body()
      if body == nil then return end
      local text = body:getBytes(0, body:length())
      local answer = restored(call, text, false)
      if answer ~= text then
        handle:body():setBytes(answer)
        handle:headers():replace("content-length", tostring(#answer))
      end
      return
    end
    headers:remove("content-length")  -- the rewritten answer's is not the upstream's
    return restore_answer(handle, call, sse, expected)
  end
  -- A modern upstream's: held whole (the call asked for nothing before its result), and sealed
  -- by the router when it may carry an input_required result, before any of it passes.
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  if find(text, "input_required", 1, true) or find(text, "\\u", 1, true) then
    text = sealed(handle, call, text, sse)
    handle:body():setBytes(text)
    handle:headers():replace("content-length", tostring(#text))
  end
end

function envoy_on_response(handle)
  local info = handle:streamInfo():dynamicMetadata()
  local ours = info:get("mcp_gateway")
  if ours and ours.modern then return modern_answer(handle, ours.modern) end
  local mark = ours and ours.call
  local number = type(mark) == "string" and byte(mark, 1) == 126 and tonumber(string.match(mark, "\n(%d+)$"))
  if not number then
    -- Not a fast call: the broker's answer, or a call the router routed. The router names the
    -- upstream of an SSE answer in the metadata (its x-mcp-* headers are gone by now): watched too.
    local mine = info:get(META)
    if mine and mine.miss then learn(handle, mine.miss) end
    local headers = handle:headers()
    watch_if_streaming(handle, headers, answering_server(headers) or (ours and ours.server))
    return
  end
  local slot = number % PENDING
  local call = pending[slot]
  if call ~= nil and call.number == number then pending[slot] = nil else call = nil end
  local headers = handle:headers()
  if call == nil then
    -- Answered after PENDING later calls of this worker: too late to replay or to name the
    -- session; the backend's session id must not reach the client all the same.
    local id = string.match(mark, "\n([^\n]*)\n%d+$")
    local ours = answering_server(headers)
    if headers:get(":status") == "404" or not (ours or refused_by_rate_limit(headers)) then
      unavailable(handle, { id = id, server = "upstream" })
    end
    handle:headers():remove(SESSION)
    return
  end
  local replayed = false
  if headers:get("x-mcp-upstream") == call.server .. " via_upstream" then
    if headers:get(":status") == "404" then
      forget_session(call.token)
      if not replay(handle, call) then unavailable(handle, call) end
      replayed = true
    end
  elseif refused_by_rate_limit(headers) then
    replayed = true  -- nothing to watch: Envoy's own JSON answer
  else
    -- Envoy's own answer (upstream down, refused, reset), not the upstream's.
    unavailable(handle, call)
    replayed = true
  end
  -- The x-mcp-* headers go in the header_mutation filter in front of this one (C++, cheaper).
  headers = handle:headers()
  headers:replace(SESSION, call.token)
  if not replayed then watch_if_streaming(handle, headers, call.server) end
end
