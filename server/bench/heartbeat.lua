-- wrk script: POST /heartbeat round-robin over MEDIC_BENCH_SERVICES registered names,
-- authenticated with MEDIC_BENCH_KEY when set.
local n = tonumber(os.getenv("MEDIC_BENCH_SERVICES") or "100")
local key = os.getenv("MEDIC_BENCH_KEY")
local headers = { ["Content-Type"] = "application/json" }
if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
local bodies = {}
for i = 1, n do
  bodies[i] = string.format('{"heartbeat_name":"bench-%d","status":"UP"}', i)
end
local i = 0
request = function()
  i = i % n + 1
  return wrk.format("POST", "/heartbeat", headers, bodies[i])
end

-- Print the figures the benchmark script parses, in one line.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f errors=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, errors, summary.requests))
end
