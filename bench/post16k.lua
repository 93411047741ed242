-- wrk script: POST a fixed body (BODY_BYTES env var, default 16 KiB) to the echo app.
local size = tonumber(os.getenv("BODY_BYTES") or "16384")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
-- wrk.format() adds Content-Length for a non-empty body.
