-- Real-editor test of the Quill Neovim plugin against the real server and model.
--
--   nvim --headless -u tests/editors/nvim/minimal_init.lua -i NONE -c "luafile tests/editors/nvim/quill_spec.lua"
--
-- Environment: QUILL_TEST_FILE (a Python file to edit, in a scratch workspace),
-- QUILL_TEST_RESULT (JSON written here), QUILL_LSP (server command; default: the repo's .venv).
-- Keys are typed with nvim_input, so they go through Neovim's real input loop: insert
-- mode, TextChangedI, mappings.  Each step records what it saw; the process exits 0 only
-- when every step passed.
local quill = require("quill")
local ghost = require("quill.ghost")
local api = vim.api
local uv = vim.uv or vim.loop

local file = assert(os.getenv("QUILL_TEST_FILE"), "QUILL_TEST_FILE is not set")
local result_path = os.getenv("QUILL_TEST_RESULT") or (vim.fn.tempname() .. ".json")
local server = os.getenv("QUILL_LSP") or (vim.g.quill_repo_root .. "/.venv/bin/quill-lsp")
local want_code_actions = os.getenv("QUILL_TEST_CODE_ACTIONS") or "auto" -- auto | require | skip

local h = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/harness.lua").new({
  result_path = result_path,
  results = { steps = {}, timings = {} },
  poll_ms = 5,
})
local results = h.results
local step, sleep, wait_until, finish = h.step, h.sleep, h.wait_until, h.finish

local function lines()
  return api.nvim_buf_get_lines(0, 0, -1, false)
end

local function current_line()
  return api.nvim_get_current_line()
end

--- Type `keys` (Neovim key notation) through the input queue and wait until consumed.
local function type_keys(keys)
  api.nvim_input(keys)
  sleep(1)
  wait_until(function()
    return vim.fn.getchar(1) == 0
  end, 2000)
end

--- Type like a person (KEY_INTERVAL_MS between keys, about 100 words a minute) and
--- measure keystroke -> ghost text: the clock starts when the last key is queued.
local KEY_INTERVAL_MS = tonumber(os.getenv("QUILL_TEST_KEY_INTERVAL_MS") or "120")
local function type_and_wait_ghost(keys, timeout_ms)
  ghost.reset()
  local chars = vim.split(keys, "")
  for i = 1, #chars - 1 do
    api.nvim_input(chars[i] == "<" and "<lt>" or chars[i])
    sleep(KEY_INTERVAL_MS)
  end
  local last = chars[#chars]
  local t0 = uv.hrtime()
  api.nvim_input(last == "<" and "<lt>" or last)
  sleep(1) -- let the input loop take the key
  -- A suggestion for the text as it is now (drawn for this cursor and changedtick; one kept
  -- on screen while typing through it counts: that is what the user sees).
  local s = wait_until(function()
    local g = ghost.get()
    local pos = api.nvim_win_get_cursor(0)
    if g and g.row == pos[1] - 1 and g.col == pos[2] and g.tick == api.nvim_buf_get_changedtick(0) then
      return g
    end
  end, timeout_ms or 60000)
  local ms = (uv.hrtime() - t0) / 1e6
  return s, ms
end

local function extmarks()
  return api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, { details = true })
end

h.run(function()
  vim.lsp.set_log_level("debug") -- the LSP log then shows the $/cancelRequest notifications
  quill.setup({ cmd = { server, "--log-level", os.getenv("QUILL_TEST_SERVER_LOG_LEVEL") or "info" }, debounce_ms = 60,
    -- One model thread: the editor and the test share 2 cores with the model, and
    -- llama.cpp's threads busy-wait on each other when a core is taken (see the README).
    -- No confidence bar: these steps check the client in many contexts, whatever the
    -- small model's confidence there (the bar itself is tested in tests/lsp).
    -- No model offer: a vim.ui.select popping up would take the typed keys (offer_spec.lua tests it).
    settings = { threads = tonumber(os.getenv("QUILL_TEST_THREADS") or "1"), minConfidence = 0, quickMinConfidence = 0, modelOffer = false } })
  vim.cmd.edit(vim.fn.fnameescape(file))
  local sample_buf = api.nvim_get_current_buf()
  vim.bo.expandtab = false -- the <Tab> fallback then inserts a literal tab

  local t_start = uv.now()
  local ready = wait_until(function()
    return quill.model_state.state == "ready" or quill.model_state.state == "error"
  end, 120000)
  results.timings.model_ready_ms = uv.now() - t_start
  if not step("server starts and the model loads", quill.model_state.state == "ready", quill.model_state) then
    return finish()
  end
  local client = quill.clients()[1]
  step("completion menu source is off by default", client.server_capabilities.completionProvider == nil)

  -- 1. Type at the end of a function, wait for the ghost text from the model, accept with <Tab>.
  api.nvim_win_set_cursor(0, { #lines(), 0 })
  type_keys("o")
  local typed = "return fib"
  local s, ms = type_and_wait_ghost(typed)
  results.timings.keystroke_to_ghost_ms = ms
  results.timings.ghost_stats = ghost.stats.last
  if not step("ghost text appears after typing", s ~= nil, { text = s and s.text, ms = ms }) then
    return finish()
  end
  local marks = extmarks()
  local details = marks[1] and marks[1][4] or {}
  local first_line = vim.split(s.text, "\n", { plain = true })[1]
  step("ghost text is an inline extmark at the cursor", #marks == 1
    and (first_line == "" or (details.virt_text_pos == "inline" and details.virt_text[1][1] == first_line:gsub("\t", "    ")))
    and marks[1][2] == s.row and marks[1][3] == s.col, details)
  step("cursor is drawn before the ghost text", vim.fn.wincol() == vim.fn.strdisplaywidth(current_line()) + 1,
    { wincol = vim.fn.wincol(), line = current_line() })
  results.ghost_text = s.text
  local before = current_line()
  type_keys("<Tab>")
  local after_lines = vim.split(before .. s.text, "\n", { plain = true })
  local row = s.row
  local got = api.nvim_buf_get_lines(0, row, row + #after_lines, false)
  step("<Tab> accepts: the buffer holds the typed text plus the suggestion",
    vim.deep_equal(got, after_lines) and #extmarks() == 0, { expected = after_lines, got = got })
  step("cursor ends after the accepted text", api.nvim_win_get_cursor(0)[1] == row + #after_lines
    and api.nvim_win_get_cursor(0)[2] == #after_lines[#after_lines], api.nvim_win_get_cursor(0))
  results.buffer_after_accept = lines()
  type_keys("<Esc>")

  -- 1b. More keystroke -> ghost text samples, each in a new context (no cache hit), before
  -- the code actions (those fill the model's KV cache with another prompt).
  results.timings.keystroke_to_ghost_samples_ms = { results.timings.keystroke_to_ghost_ms }
  local all_shown = true
  for _, text in ipairs({ "result = fibonacci(", "area = circle_area(", "print(math." }) do
    api.nvim_win_set_cursor(0, { #lines(), 0 })
    type_keys("o")
    local requests_before = ghost.stats.shown
    local got, t = type_and_wait_ghost(text, 30000)
    table.insert(results.timings.keystroke_to_ghost_samples_ms, got and t or vim.NIL)
    results.timings.model_request_samples_ms = results.timings.model_request_samples_ms or {}
    if got and ghost.stats.shown > requests_before then
      table.insert(results.timings.model_request_samples_ms, ghost.stats.last.request_ms)
    end
    all_shown = all_shown and got ~= nil
    type_keys("<Esc>")
  end
  step("ghost text in each further context", all_shown, results.timings.keystroke_to_ghost_samples_ms)

  -- 2. <Esc> clears the ghost text.
  api.nvim_win_set_cursor(0, { #lines(), 0 })
  type_keys("o<CR>def area(r):<CR>")
  s = type_and_wait_ghost('"""Return the area')
  if s then
    type_keys("<Esc>")
    step("<Esc> clears the ghost text", #extmarks() == 0 and ghost.get() == nil and vim.fn.mode() == "n")
  else
    step("<Esc> clears the ghost text (no suggestion came)", false)
  end

  -- 3. Accept word and accept line: the rest stays visible.
  type_keys("A")
  s = type_and_wait_ghost(" of")
  if s and s.text:find("%w") then
    local full = s.text
    local line0 = current_line()
    type_keys("<M-Right>")
    local now = current_line()
    local added = now:sub(#line0 + 1)
    local rest = ghost.get()
    step("<M-Right> accepts the next word and keeps the rest shown",
      #added > 0 and full:sub(1, #added) == added and (rest == nil and #added == #full or (rest and rest.text == full:sub(#added + 1))),
      { suggestion = full, added = added, rest = rest and rest.text })
    if rest then
      local line1 = current_line()
      type_keys("<M-C-Right>")
      local first = rest.text:match("^[^\n]+") or rest.text:match("^\n[^\n]*")
      local ok
      if rest.text:sub(1, 1) == "\n" then
        ok = api.nvim_win_get_cursor(0)[1] > 1 and (ghost.get() == nil or ghost.get().text == rest.text:sub(#first + 1))
      else
        ok = current_line() == line1 .. first
      end
      step("<M-C-Right> accepts the rest of the line", ok, { rest = rest.text, line = current_line() })
    end
  else
    step("accept word (no suggestion with a word came)", false, s)
  end
  type_keys("<Esc>")

  -- 4. <Tab> with nothing shown keeps its normal meaning.
  type_keys("o")
  type_keys("<C-]>")
  ghost.reset()
  local line_before_tab = current_line()
  type_keys("<Tab>")
  -- What Tab does there depends on 'softtabstop'/'expandtab' (the python ftplugin sets
  -- them): it indents, and inserts nothing else.
  local after_tab = current_line()
  step("<Tab> without a suggestion indents as usual",
    line_before_tab:match("^%s*$") and after_tab:match("^%s*$")
      and vim.fn.strdisplaywidth(after_tab) > vim.fn.strdisplaywidth(line_before_tab),
    { before = line_before_tab, after = after_tab })
  type_keys("<Esc>")
  ghost.reset()

  -- 5. Stale requests are cancelled with $/cancelRequest: type slower than the debounce
  -- but faster than the model.
  local cancelled_before = ghost.stats.cancelled
  type_keys("o")
  for _, ch in ipairs({ "x", " ", "=", " ", "m", "a", "t", "h", "." }) do
    api.nvim_input(ch)
    sleep(90)
  end
  wait_until(function()
    return ghost.get() ~= nil or not ghost.busy()
  end, 60000)
  local logtext = table.concat(vim.fn.readfile(vim.lsp.get_log_path()), "\n")
  local sent_cancel = logtext:find("$/cancelRequest", 1, true) ~= nil
  step("stale requests are cancelled ($/cancelRequest sent)", ghost.stats.cancelled > cancelled_before and sent_cancel,
    { cancelled = ghost.stats.cancelled - cancelled_before, in_log = sent_cancel })
  type_keys("<Esc>")
  ghost.reset()

  -- 6. :Quill status and :checkhealth quill.
  local ok_status, status = pcall(quill.status)
  step("quill/status answers", ok_status and status and status.state == "ready", status)
  vim.cmd("checkhealth quill")
  local health = table.concat(api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  results.checkhealth = health
  step(":checkhealth quill reports server, version, model and state",
    health:find("server: ", 1, true) and health:find("version: quill-lsp", 1, true)
      and health:find("state ready", 1, true) and health:find("model: ", 1, true) ~= nil, nil)
  vim.cmd("bwipeout!")

  -- 6b. Right after a long file is opened the server answers from a quick prompt (the
  -- lines near the cursor); once its full prompt is evaluated, a different suggestion is
  -- announced with quill/refreshInlineCompletion and the plugin asks again at the cursor:
  -- the ghost text becomes the full prompt's.  The name to complete is defined far above.
  local far = { "import statistics", "", "", "def quarterly_revenue_projection(sales, months):",
    '    """Project the revenue of the next quarter from monthly sales."""',
    "    return statistics.fmean(sales[-months:]) * 3" }
  for i = 0, 23 do
    vim.list_extend(far, { "", "", ("def helper_%d(values):"):format(i), ('    """Step %d of the pipeline."""'):format(i),
      ("    out = [v * %d for v in values if v > %d]"):format(i + 2, i), ("    return sorted(out)[:%d]"):format(i + 3) })
  end
  vim.list_extend(far, { "", "", "def report(sales):", "    projected = quarterly" })
  local far_path = vim.fn.fnamemodify(file, ":h") .. "/far_name.py"
  vim.fn.writefile(far, far_path)
  vim.cmd.edit(vim.fn.fnameescape(far_path))
  api.nvim_win_set_cursor(0, { #lines(), 0 })
  type_keys("A")
  local refreshed_before = ghost.stats.refreshed
  local quick = type_and_wait_ghost("_", 60000)
  local refreshed = wait_until(function()
    return ghost.stats.refreshed > refreshed_before
  end, 300000)
  local st = quill.status() or {}
  local final = st.session and st.session.lastCompletion or {}
  local shown = ghost.get()
  -- The first refresh may come from the quick prompt after the retrieved context ("context"),
  -- evaluated before the whole prompt ("full").
  step("a refresh from the server replaces the quick suggestion with a fuller prompt's", refreshed ~= nil
    and (final.promptKind == "full" or final.promptKind == "context")
    and ((shown and shown.text) or "") == (final.text or ""),
    { quick = quick and quick.text, shown = shown and shown.text, full = final.text, kind = final.promptKind,
      refreshed = ghost.stats.refreshed - refreshed_before })
  type_keys("<Esc>")
  vim.cmd("bwipeout!")
  api.nvim_set_current_buf(sample_buf)

  -- 7. Code actions: "Explain with Quill" opens a float; a refactor action edits the buffer.
  local fn_start, fn_end
  for i, l in ipairs(lines()) do
    if l:match("^def fibonacci") then
      fn_start = i
    elseif fn_start and not fn_end and i > fn_start and l:match("^%S") then
      fn_end = i - 1
    end
  end
  fn_end = fn_end or #lines()
  local range = {
    start = { line = fn_start - 1, character = 0 },
    ["end"] = { line = fn_end - 1, character = #lines()[fn_end] },
  }
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(0) },
    range = range,
    context = { diagnostics = {}, triggerKind = 1 },
  }
  local responses = vim.lsp.buf_request_sync(0, "textDocument/codeAction", params, 30000) or {}
  local actions = {}
  for _, r in pairs(responses) do
    for _, a in ipairs(r.result or {}) do
      table.insert(actions, a)
    end
  end
  results.code_actions = vim.tbl_map(function(a)
    return { title = a.title, kind = a.kind }
  end, actions)
  if #actions == 0 and want_code_actions ~= "require" then
    results.code_actions_skipped = "the server offers no code actions yet"
    step("code actions (skipped: the server offers none)", true)
  elseif want_code_actions ~= "skip" then
    step("the server offers code actions", #actions > 0, results.code_actions)
    local vrange = { start = { fn_start, 0 }, ["end"] = { fn_end, #lines()[fn_end] } }
    local explain_seen
    api.nvim_create_autocmd("User", {
      pattern = "QuillExplain",
      once = true,
      callback = function(ev)
        explain_seen = ev.data
      end,
    })
    local t0 = uv.now()
    vim.lsp.buf.code_action({
      range = vrange,
      apply = true,
      filter = function(a)
        return a.title:lower():find("explain", 1, true) ~= nil
      end,
    })
    local seen = wait_until(function()
      return explain_seen
    end, 120000)
    results.timings.explain_ms = uv.now() - t0
    if step("Explain with Quill opens the explanation in a float", seen ~= nil
      and api.nvim_win_get_config(seen.win).relative ~= ""
      and vim.bo[seen.buf].filetype == "markdown", seen) then
      results.explain_text = table.concat(api.nvim_buf_get_lines(seen.buf, 0, -1, false), "\n")
      step("the explanation has text", #vim.trim(results.explain_text) > 20, { chars = #results.explain_text })
      api.nvim_win_close(seen.win, true)
    end
    -- A refactor action: resolved lazily (codeAction/resolve) into a WorkspaceEdit.
    local refactor
    for _, a in ipairs(actions) do
      if (a.kind or ""):match("^refactor") then
        refactor = refactor or a
      end
    end
    if refactor then
      local tick = api.nvim_buf_get_changedtick(0)
      local before_text = table.concat(lines(), "\n")
      t0 = uv.now()
      vim.lsp.buf.code_action({
        range = vrange,
        apply = true,
        filter = function(a)
          return a.title == refactor.title
        end,
      })
      local changed = wait_until(function()
        return api.nvim_buf_get_changedtick(0) ~= tick
      end, 120000)
      results.timings.refactor_ms = uv.now() - t0
      results.refactor = { title = refactor.title, before = before_text, after = table.concat(lines(), "\n") }
      step("a refactor code action edits the buffer (" .. refactor.title .. ")", changed ~= nil, { title = refactor.title })
    else
      step("a refactor code action is offered", false, results.code_actions)
    end
  end

  -- 8. A crashed server is restarted (with backoff), and completions come back.
  local pid
  for _, child in ipairs(api.nvim_get_proc_children(vim.fn.getpid())) do
    local info = api.nvim_get_proc(child)
    if info and (info.name or ""):match("python") or (info and (info.name or ""):match("quill")) then
      pid = child
    end
  end
  if pid then
    local old_id = quill.clients()[1] and quill.clients()[1].id
    uv.kill(pid, "sigkill")
    local back = wait_until(function()
      local c = quill.clients()[1]
      return c and c.id ~= old_id and quill.model_state.state == "ready"
    end, 120000)
    step("a killed server is restarted and the model reloads", back ~= nil, { killed = pid })
    if back then
      api.nvim_win_set_cursor(0, { #lines(), 0 })
      type_keys("o")
      s = type_and_wait_ghost("return fib")
      step("ghost text works after the restart", s ~= nil, s)
      type_keys("<Esc>")
    end
  else
    step("found the server process to kill", false, api.nvim_get_proc_children(vim.fn.getpid()))
  end
  finish()
end)
