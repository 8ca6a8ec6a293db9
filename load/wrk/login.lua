-- POST /login as testuser/testpass (the seed script's exact request).
-- Each login hashes a password (argon2id), so expect low req/s; a 401 means the user is missing.
--   wrk -t1 -c10 -d10s --latency -s load/wrk/login.lua http://127.0.0.1:8080
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "common.lua")

wrk.method = "POST"
wrk.path = "/login"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username":"testuser","password":"testpass"}'
