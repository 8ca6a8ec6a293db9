-- GET /healthz.   wrk -t1 -c100 -d10s --latency -s load/wrk/healthz.lua http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "GET"
wrk.path = "/healthz"
