-- POST /rooms/$ROOM_ID/messages with Bearer $TOKEN and a new txn_id per request.
-- Start the server with --send-rate 0, or the per-user rate limit answers 429.
--   TOKEN=... ROOM_ID=1 wrk -t1 -c100 -d10s --latency -s load/wrk/send.lua http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local token = assert(os.getenv("TOKEN"), "set TOKEN")
local room = assert(os.getenv("ROOM_ID"), "set ROOM_ID")
local path = "/rooms/" .. room .. "/messages"
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}

function request()
   local txn = unique("t")
   local body = string.format('{"text":"load test %s","txn_id":"%s"}', txn, txn)
   return wrk.format("POST", path, headers, body)
end
