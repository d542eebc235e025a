-- wrk script: every request is a POST of the same JSON-RPC body (the file named by
-- MG_BODY) with the bearer token MG_TOKEN, to MG_PATH: the MCP benchmarks' load.
local f = assert(io.open(os.getenv("MG_BODY"), "rb"))
local body = f:read("*a")
f:close()
local target = os.getenv("MG_PATH") or "/mcp"
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("MG_TOKEN"),
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
  ["MCP-Protocol-Version"] = "2025-11-25",
}

request = function()
  return wrk.format("POST", target, headers, body)
end
