-- GET /rooms/$ROOM_ID/messages?limit=50 with Bearer $TOKEN (the newest page of history).
--   TOKEN=... ROOM_ID=1 wrk -t1 -c100 -d10s --latency -s load/wrk/history.lua http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local token = assert(os.getenv("TOKEN"), "set TOKEN")
local room = assert(os.getenv("ROOM_ID"), "set ROOM_ID")

wrk.method = "GET"
wrk.path = "/rooms/" .. room .. "/messages?limit=50"
wrk.headers["Authorization"] = "Bearer " .. token
