-- Long-poll: GET /rooms/$ROOM_ID/messages?after=<last seq seen>&wait=$WAIT with Bearer $TOKEN.
-- Starts from $AFTER (the room's last_seq); every answer moves this thread's cursor to the newest
-- seq it carried, so the next poll waits for the message after it (as a real client does).
-- With nothing sent each poll is held ~$WAIT s and answers `messages: []`: req/s ~= connections /
-- WAIT and p50 - WAIT*1000 ms is the server's overhead. With a sender posting, each message wakes
-- every waiting poll (req/s = wake-ups answered).
--   TOKEN=... ROOM_ID=1 AFTER=60 WAIT=1 wrk -t1 -c100 -d10s --latency -s load/wrk/longpoll.lua \
--       http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local token = assert(os.getenv("TOKEN"), "set TOKEN")
local room = assert(os.getenv("ROOM_ID"), "set ROOM_ID")
local wait = os.getenv("WAIT") or "1"
after = tonumber(os.getenv("AFTER") or "0")
local headers = {["Authorization"] = "Bearer " .. token}

function request()
   local path = string.format("/rooms/%s/messages?after=%d&wait=%s", room, after, wait)
   return wrk.format("GET", path, headers)
end

local count_status = response
function response(status, headers, body)
   count_status(status, headers, body)
   if status == 200 and body then
      for seq in body:gmatch('"seq":%s*(%d+)') do
         seq = tonumber(seq)
         if seq > after then after = seq end
      end
   end
end
