-- Strict JSON request bodies for the REST API, checked before Envoy's grpc_json_transcoder.
--
-- The transcoder drops unknown JSON fields (its library parses with ignore_unknown_fields
-- hard-coded) and coerces some wrong types: a scalar where a list belongs ("tags": "x"
-- became ["x"]), nested lists (flattened), a Timestamp given as an object, a bool given as
-- the string "true". This filter refuses those with a 400 naming the field; what it lets
-- through, the transcoder parses exactly as before.
--
-- RULES (prepended by server/strict_json.py when the edge config is rendered, from the
-- same descriptor the transcoder loads) lists, per REST route with a body: the method, a
-- Lua pattern of the path, the body's message and, per JSON key (lowerCamelCase and proto
-- name), the JSON kinds its value may have ("s" string, "n" number, "b" boolean, "o"
-- object, "a" array; `items` for an array's elements). null is always allowed (proto3
-- JSON: the same as leaving the field out). Only top-level keys are checked: the
-- generator refuses a body message whose fields are messages other than well-known
-- types with a JSON scalar form, so for these protos the top level is the whole body.
--
-- Cost: requests that match no rule (every GET and DELETE, native gRPC) pay a table walk
-- of string compares; a body is scanned once with string.find (string contents are
-- skipped, not walked character by character). Malformed JSON is left to the transcoder,
-- which answers it with its own 400.

local find, sub, byte, char = string.find, string.sub, string.byte, string.char

local KIND_NAMES =
  { s = "a string", n = "a number", b = "true or false", o = "an object", a = "an array", null = "null" }
local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function skip_space(s, i)
  return find(s, "[^ \t\r\n]", i)
end

-- The index after the string that starts at i (a quote). A plain find of the closing
-- quote (a memchr, fast on a long description) that an odd run of backslashes escapes.
local function skip_string(s, i)
  local j = i + 1
  while true do
    local k = find(s, '"', j, true)
    if not k then
      return nil
    end
    local b = k - 1
    while byte(s, b) == 92 do
      b = b - 1
    end
    if (k - 1 - b) % 2 == 0 then
      return k + 1
    end
    j = k + 1
  end
end

-- A key as the transcoder reads it: escapes decoded (field names are ASCII, so any
-- other \u escape stands for a character no field name has).
local function unescape(raw)
  if not find(raw, "\\", 1, true) then
    return raw
  end
  local out, i = {}, 1
  while i <= #raw do
    local c = sub(raw, i, i)
    if c ~= "\\" then
      out[#out + 1] = c
      i = i + 1
    elseif sub(raw, i + 1, i + 1) == "u" then
      local code = tonumber(sub(raw, i + 2, i + 5), 16) or 0xFFFF
      out[#out + 1] = code < 128 and char(code) or "?"
      i = i + 6
    else
      out[#out + 1] = ESCAPES[sub(raw, i + 1, i + 1)] or "?"
      i = i + 2
    end
  end
  return table.concat(out)
end

-- The JSON kind of the value at i, from its first character (nil: not JSON).
local KIND_OF = { ['"'] = "s", ["{"] = "o", ["["] = "a", t = "b", f = "b", n = "null" }
local function kind_at(s, i)
  local c = sub(s, i, i)
  return KIND_OF[c] or (find(c, "^[-%d]") and "n") or nil
end

-- The index after the value at i, of kind `kind`; nil when it is not JSON.
local LITERALS = { t = "true", f = "false", n = "null" }
local function skip_value(s, i, kind)
  if kind == "s" then
    return skip_string(s, i)
  elseif kind == "n" then
    local _, e = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    return e and e + 1
  elseif kind == "o" or kind == "a" then
    local depth, j = 1, i + 1
    while depth > 0 do
      local k = find(s, '["{}%[%]]', j)
      if not k then
        return nil
      end
      local d = sub(s, k, k)
      if d == '"' then
        j = skip_string(s, k)
        if not j then
          return nil
        end
      else
        depth = depth + ((d == "{" or d == "[") and 1 or -1)
        j = k + 1
      end
    end
    return j
  end
  local word = LITERALS[sub(s, i, i)]
  return sub(s, i, i + #word - 1) == word and i + #word or nil
end

local function wrong_kind(path, allowed, kind)
  local names = {}
  for k in allowed:gmatch(".") do
    names[#names + 1] = KIND_NAMES[k]
  end
  return path .. ": must be " .. table.concat(names, " or ") .. ", not " .. KIND_NAMES[kind]
end

-- Checks the elements of the array at i (a bracket): a message naming the first bad one,
-- or nil and the index after the array (nil, nil: malformed, left to the transcoder).
local function check_items(s, i, path, items)
  local j = skip_space(s, i + 1)
  if j and sub(s, j, j) == "]" then
    return nil, j + 1
  end
  local index = 0
  while j do
    local kind = kind_at(s, j)
    if not kind then
      return nil, nil
    end
    if not find(items, kind, 1, true) then -- null included: it is no list element
      return wrong_kind(path .. "[" .. index .. "]", items, kind)
    end
    j = skip_space(s, skip_value(s, j, kind) or #s + 1)
    local c = j and sub(s, j, j)
    if c == "]" then
      return nil, j + 1
    elseif c ~= "," then
      return nil, nil
    end
    j = skip_space(s, j + 1)
    index = index + 1
  end
  return nil, nil
end

-- A message naming the first unknown key or wrong kind in the body, or nil.
local function check_body(s, rule)
  local i = skip_space(s, 1)
  if not i or sub(s, i, i) ~= "{" then
    return nil -- not an object (or empty): the transcoder decides
  end
  i = skip_space(s, i + 1)
  local given = {} -- field JSON name -> true once a non-null value was seen, by either spelling
  while i and sub(s, i, i) == '"' do
    local j = skip_string(s, i)
    if not j then
      return nil
    end
    local key = unescape(sub(s, i + 1, j - 2))
    local path = rule.prefix .. (#key > 64 and sub(key, 1, 64) .. "..." or key)
    local field = rule.fields[key]
    if not field then
      return path .. ": unknown field of " .. rule.message
    end
    j = skip_space(s, j)
    if not j or sub(s, j, j) ~= ":" then
      return nil
    end
    j = skip_space(s, j + 1)
    local kind = j and kind_at(s, j)
    if not kind then
      return nil
    end
    -- The kind is known from the first character: a wrong one is refused before any scan.
    if kind ~= "null" and not find(field.kinds, kind, 1, true) then
      return wrong_kind(path, field.kinds, kind)
    end
    -- One value per field: the JSON and the proto name together (or one key twice) would
    -- leave the parser to pick one silently.
    if kind ~= "null" then
      if given[field.name] then
        return path .. ": given twice (one field, by its JSON or proto name)"
      end
      given[field.name] = true
    end
    local after
    if kind == "a" and field.items then
      local problem
      problem, after = check_items(s, j, path, field.items)
      if problem then
        return problem
      end
    else
      after = skip_value(s, j, kind)
    end
    if not after then
      return nil
    end
    i = skip_space(s, after)
    if not i or sub(s, i, i) ~= "," then
      return nil -- the closing brace, or malformed
    end
    i = skip_space(s, i + 1)
  end
  return nil
end

local function rule_for(method, path)
  for _, rule in ipairs(RULES) do
    if rule.method == method and find(path, rule.path) then
      return rule
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path")
  local rule = path and rule_for(headers:get(":method"), (path:match("^[^?#]*")))
  if not rule then
    return
  end
  local body = handle:body()
  if not body then
    return -- no body: the transcoder treats it as {}
  end
  local problem = check_body(body:getBytes(0, body:length()), rule)
  if problem then
    -- local_reply_config turns this into {code: 3, message: <this text>, details: []}
    handle:respond({ [":status"] = "400", ["content-type"] = "text/plain" }, "invalid request: " .. problem)
  end
end
