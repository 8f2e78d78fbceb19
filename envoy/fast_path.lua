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
    if c == nil or c < 32 then return FAIL end  -- the end, or a control character
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

-- `visit(s, key, at, limits, into)`, when given, reads each member's value itself (returning
-- the index after it, or FAIL): how read_call looks at the members it cares about in the same
-- single pass (a top-level function, not a closure: LuaJIT compiles no closure creation).
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
    j = skip_ws(s, k)
    if byte(s, j) ~= 58 then return FAIL end
    if visit then
      j = visit(s, key, skip_ws(s, j + 1), limits, into)
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

-- A member of params: `name` must be a plain, non-empty string; its span is what gets rewritten.
local function params_member(s, key, at, limits, call)
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
    call.id = raw
  end
  return e
end

-- The routed call a body is, or nil. Returns a table: method, name, the name's span
-- (first and last byte of its text inside the quotes) and the id's raw JSON text.
local function read_call(s, limits)
  if find(s, "[\128-\255]") then return nil end
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
local generation = nil   -- the router config the decisions were made under
local settings = nil     -- the POST route's settings (limits), read when its name changes
local settings_route = nil

local function forget_all()
  sessions, session_count = {}, 0
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
  held[key] = decision
end

local function forget_session(token)
  if sessions[token] ~= nil then
    sessions[token] = nil
    session_count = session_count - 1
  end
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
  local length = tonumber(headers:get("content-length") or "")
  if token == nil or #token > 256 or length == nil or length > context.max_body then return end
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  local call = read_call(text, context)
  if call == nil then return end
  headers = handle:headers()  -- the wrapper taken before body() does not outlive the wait
  -- 2026-07-28 mirrors method and name in headers: only an exact, plain match stays here.
  local mirrored_method, mirrored_name = headers:get("mcp-method"), headers:get("mcp-name")
  if (mirrored_method and mirrored_method ~= call.method) or (mirrored_name and mirrored_name ~= call.name) then
    return
  end
  local virtual, origin = headers:get("x-mcp-virtualserver"), headers:get("origin")
  local authorization = headers:get("authorization")
  if authorization and #authorization > MAX_AUTHORIZATION then return end
  local key = decision_key(call.method, call.name, virtual, origin, authorization)
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
  if decision.authorization ~= "" then
    headers:replace("authorization", decision.authorization)
  else
    headers:remove("authorization")
  end
  if virtual then headers:remove("x-mcp-virtualserver") end
  -- The Origin was checked by the router when it decided (it is part of the key); the
  -- upstream's client is the gateway (router/decision.py forward() drops it too).
  if origin then headers:remove("origin") end
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
    [SESSION] = call.token, [SLOW] = "1",
  }
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
  if fill.generation == miss.gen and miss.gen == generation then
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
local function relist_before_telling(handle, server)
  local tail = ""
  for chunk in handle:bodyChunks() do
    local size = chunk:length()
    if size > 0 then
      local text = tail .. chunk:getBytes(0, size)
      if find(text, CHANGED, 1, true) then
        handle:httpCall("mcp_broker", {
          [":method"] = "POST", [":path"] = "/internal/relist?server=" .. server,
          [":authority"] = "mcp_broker", ["x-mcp-internal"] = "relist",
        }, "", { timeout_ms = RELIST_TIMEOUT_MS, send_xff = false })
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

function envoy_on_response(handle)
  local info = handle:streamInfo():dynamicMetadata()
  local ours = info:get("mcp_gateway")
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
