-- SSE `id:` lines for GET /api/v1/tasks:watch (WatchTasks transcoded as Server-Sent Events).
--
-- Envoy 1.40's transcoder (stream_sse_style_delimited) writes each TaskChange as
-- `data: <json>\n\n` and nothing else, so a browser's EventSource never learns a last event
-- id. This script, set only on the watch route (LuaPerRoute in envoy.yaml.j2), prefixes
-- every event with `id: <resumeToken>` taken from the event's own JSON, heartbeats (a
-- TaskChange with only a token) included; a client then reconnects with Last-Event-ID.
--
-- Streaming, never the whole body: bodyChunks() hands over each chunk as it passes and
-- setBytes() rewrites it in place. An event split across chunks waits in `carry` for its
-- end (the transcoder writes one whole event per message, so this is the rare case);
-- several events in one chunk each get their id. Only text/event-stream is touched: an
-- error before the stream starts is a plain JSON body and passes as is.
--
-- Finding the token: JSON escapes every `"` inside a string as `\"`, so `resumeToken":"`
-- (a quote right after the name) cannot occur inside a task's text; the first match is the
-- top-level key. Tokens are URL-safe base64 and dots: no quote, backslash or newline.

local find, sub, match, concat = string.find, string.sub, string.match, table.concat
local TOKEN = '"resumeToken":"([^"\\]+)"'
local CARRY_MAX = 4 * 1024 * 1024 -- an event larger than any TaskChange: passed through as is

local function with_id(event)
  local token = match(event, TOKEN)
  return token and ("id: " .. token .. "\n" .. event) or event
end

function envoy_on_response(response)
  local content_type = response:headers():get("content-type") or ""
  if sub(content_type, 1, 17) ~= "text/event-stream" then
    return
  end
  local carry = ""
  for chunk in response:bodyChunks() do
    local text = carry .. chunk:getBytes(0, chunk:length())
    local stop = find(text, "\n\n", 1, true)
    if stop == #text - 1 then -- the usual chunk: exactly one whole event
      carry = ""
      chunk:setBytes(with_id(text))
    else
      local out, start = {}, 1
      while stop do
        out[#out + 1] = with_id(sub(text, start, stop + 1))
        start = stop + 2
        stop = find(text, "\n\n", start, true)
      end
      carry = sub(text, start)
      if #carry > CARRY_MAX then
        out[#out + 1], carry = carry, ""
      end
      chunk:setBytes(concat(out))
    end
  end
end
