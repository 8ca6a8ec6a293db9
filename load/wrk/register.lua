-- POST /register with a new username per request: "r<run>.<thread>.<n>" (matches
-- ^[A-Za-z0-9_.-]{3,32}$; the run id is hex seconds, or $RUN_ID if set).
--   wrk -t1 -c10 -d10s --latency -s load/wrk/register.lua http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

local headers = {["Content-Type"] = "application/json"}

function request()
   local body = string.format('{"username":"%s","password":"loadtest-password"}', unique("r"))
   return wrk.format("POST", "/register", headers, body)
end
