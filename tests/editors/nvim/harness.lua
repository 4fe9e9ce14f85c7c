-- What the Neovim specs (quill_spec.lua, offer_spec.lua) share: steps recorded into a
-- results table, a coroutine that sleeps and waits on the event loop, and the JSON result
-- written at the end (the process exits 0 only when every step passed).  A spec loads it by
-- its own path:
--
--   local here = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
--   local h = dofile(here .. "/harness.lua").new({ result_path = ..., results = { ... } })
--
-- The functions are closures over the harness (h.step(...), no colon), so a spec may bind
-- them to locals.  Its fields: results, failed, result_path, poll_ms.
local uv = vim.uv or vim.loop

local M = {}

--- opts.result_path: where the JSON result goes; opts.results: the results table to fill
--- (steps = {} is added when missing); opts.poll_ms: how often wait_until looks (default 10).
function M.new(opts)
  local h = {
    results = opts.results or {},
    failed = false,
    result_path = assert(opts.result_path, "harness: result_path is not set"),
    poll_ms = opts.poll_ms or 10,
  }
  h.results.steps = h.results.steps or {}

  function h.log(...)
    io.stderr:write(table.concat(vim.tbl_map(tostring, { ... }), " ") .. "\n")
  end

  --- Write the result and quit: exit code 1 when a step failed.
  function h.finish()
    h.results.ok = not h.failed
    h.results.nvim = tostring(vim.version())
    h.results.load_average = { uv.loadavg() }
    local f = assert(io.open(h.result_path, "w"))
    f:write(vim.json.encode(h.results))
    f:close()
    vim.cmd(h.failed and "cquit 1" or "qall!")
  end

  --- Resume the coroutine `co`; an error in it fails the run and finishes it.
  function h.resume(co, ...)
    local ok, err = coroutine.resume(co, ...)
    if not ok then
      h.failed = true
      h.results.error = tostring(err) .. "\n" .. debug.traceback(co)
      h.log("ERROR", h.results.error)
      h.finish()
    end
  end

  --- Sleep `ms` in the running coroutine, the event loop going on.
  function h.sleep(ms)
    local co = coroutine.running()
    vim.defer_fn(function()
      h.resume(co)
    end, ms)
    coroutine.yield()
  end

  --- cond()'s first true value, looked at every poll_ms; nil after `timeout_ms`.
  function h.wait_until(cond, timeout_ms)
    local start = uv.now()
    while true do
      local v = cond()
      if v then
        return v
      end
      if uv.now() - start > timeout_ms then
        return nil
      end
      h.sleep(h.poll_ms)
    end
  end

  --- Record a step; a failed one fails the run.  Returns `ok`.
  function h.step(name, ok, detail)
    table.insert(h.results.steps, { name = name, ok = ok and true or false, detail = detail })
    h.log(ok and "PASS" or "FAIL", name, detail ~= nil and vim.inspect(detail) or "")
    if not ok then
      h.failed = true
    end
    return ok
  end

  --- Run `fn` in a coroutine, started from the event loop (after the spec's file is read).
  function h.run(fn)
    local co = coroutine.create(fn)
    vim.schedule(function()
      h.resume(co)
    end)
  end

  return h
end

return M
