-- GET $URL_PATH with Bearer $TOKEN (any read: a room list, a search).
--   TOKEN=... URL_PATH='/rooms?joined=true' wrk -t1 -c10 -d10s --latency -s load/wrk/get.lua http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = assert(os.getenv("URL_PATH"), "set URL_PATH")
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("TOKEN"), "set TOKEN")
