-- wrk script: POST /todos with a small JSON body; BENCH_TOKEN adds a bearer token.
wrk.method = "POST"
wrk.body = '{"text":"bench todo"}'
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
