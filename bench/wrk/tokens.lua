-- wrk script: every request carries the next token of a pre-minted list (one per line in
-- the file named by MG_TOKENS), so the filter verifies a signature it has never seen.
-- Run with one wrk thread (-t1): the list is walked once, in order; if a run sends more
-- requests than there are tokens it wraps around (run.py detects that and fails the run).
local tokens = {}
local path = os.getenv("MG_TOKENS")
for line in io.lines(path) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
local target = os.getenv("MG_PATH") or "/v1/orders/42"
local i = 0

request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format("GET", target, { ["Authorization"] = tokens[i] })
end
