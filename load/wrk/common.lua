-- Shared by every scenario in load/wrk/: thread ids, per-status counting and an honest summary.
--
-- wrk runs one Lua state per thread plus one for setup/done. `setup(thread)` runs in the main
-- state and hands each thread an id (and a run id, so unique names never repeat across runs);
-- `response()` runs in the thread's state and counts statuses there; `done()` runs in the main
-- state and collects every thread's counts with thread:get().
--
-- A scenario script loads this file first:
--   local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
--   dofile(dir .. "common.lua")

local threads = {}
local next_id = 0
local run_id = os.getenv("RUN_ID") or string.format("%x", os.time())

function setup(thread)
   next_id = next_id + 1
   thread:set("id", next_id)
   thread:set("run", run_id)
   table.insert(threads, thread)
end

-- per-thread state (set by setup through thread:set before init runs)
counts = {}
counter = 0

-- Unique per request across threads and runs: <run>.<thread id>.<counter>
function unique(prefix)
   counter = counter + 1
   return string.format("%s%s.%d.%d", prefix, run, id, counter)
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
   if status >= 300 and first_error == nil then
      first_error = string.format("%d %s", status, (body or ""):sub(1, 200))
   end
end

function done(summary, latency, requests)
   local total, bad, statuses, sample = {}, 0, {}, nil
   for _, thread in ipairs(threads) do
      local c = thread:get("counts") or {}
      for status, n in pairs(c) do
         total[status] = (total[status] or 0) + n
      end
      sample = sample or thread:get("first_error")
   end
   for status, n in pairs(total) do
      if status < 200 or status >= 300 then bad = bad + n end
      table.insert(statuses, status)
   end
   table.sort(statuses)
   local parts = {}
   for _, status in ipairs(statuses) do
      table.insert(parts, string.format("%d=%d", status, total[status]))
   end
   local e = summary.errors
   io.write(string.format("non-2xx: %d\n", bad))
   io.write(string.format("statuses: %s\n", #parts > 0 and table.concat(parts, " ") or "(none)"))
   io.write(string.format("socket errors: connect=%d read=%d write=%d timeout=%d\n",
                          e.connect, e.read, e.write, e.timeout))
   if sample then io.write("first non-2xx: " .. sample .. "\n") end
   if bad > 0 or e.connect + e.read + e.write + e.timeout > 0 then
      io.write("RESULT: ERRORS - do not trust the req/s above\n")
   end
end
