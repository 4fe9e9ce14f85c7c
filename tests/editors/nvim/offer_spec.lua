-- Real-editor test of the first-run model offer (test_neovim.py::test_neovim_model_offer*):
-- the real server on its demo model, in a test world (tests/offer_world.py) where a code
-- model fits the machine and a fake Hugging Face serves it.
--
--   nvim --headless -u tests/editors/nvim/minimal_init.lua -i NONE -c "luafile tests/editors/nvim/offer_spec.lua"
--
-- Environment: QUILL_TEST_FILE, QUILL_TEST_RESULT, QUILL_LSP (as quill_spec.lua),
-- QUILL_TEST_PHASE: "first" (the offer, a cancelled download, :QuillRecommend, the download,
-- the switch), "again" (a second start: the remembered model, no offer), "user_model"
-- (setup{} names the demo model: it wins over the remembered one, still no offer),
-- "offline" (the manual steps, no download); QUILL_TEST_MODEL_ID: the offered model.
-- vim.ui.select is replaced by a stub that picks the entries named in QUILL_TEST_PICKS
-- (comma-separated beginnings, one per call); vim.notify is recorded.
local quill = require("quill")
local offer = require("quill.offer")
local api = vim.api
local uv = vim.uv or vim.loop

local file = assert(os.getenv("QUILL_TEST_FILE"), "QUILL_TEST_FILE is not set")
local result_path = assert(os.getenv("QUILL_TEST_RESULT"), "QUILL_TEST_RESULT is not set")
local server = os.getenv("QUILL_LSP") or (vim.g.quill_repo_root .. "/.venv/bin/quill-lsp")
local phase = assert(os.getenv("QUILL_TEST_PHASE"), "QUILL_TEST_PHASE is not set")
local model_id = assert(os.getenv("QUILL_TEST_MODEL_ID"), "QUILL_TEST_MODEL_ID is not set")
local DEMO = "smollm2-135m-instruct"

local h = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/harness.lua").new({
  result_path = result_path,
  results = { phase = phase, steps = {}, notes = {}, selects = {}, events = {} },
})
local results = h.results
local log, step, sleep, wait_until, finish = h.log, h.step, h.sleep, h.wait_until, h.finish

-- What the user is told, and the choices they are given.
local real_notify = vim.notify
vim.notify = function(msg, level, opts)
  table.insert(results.notes, { msg = msg, level = level or vim.log.levels.INFO, t = uv.now() })
  log("NOTIFY", level or vim.log.levels.INFO, msg)
  return real_notify(msg, level, opts)
end
local picks = vim.split(os.getenv("QUILL_TEST_PICKS") or "", ",", { trimempty = true })
vim.ui.select = function(items, opts, on_choice)
  local n = #results.selects + 1
  local want = picks[n]
  local record = { items = vim.deepcopy(items), prompt = opts and opts.prompt, kind = opts and opts.kind, mode = api.nvim_get_mode().mode }
  table.insert(results.selects, record)
  log("SELECT", vim.inspect(items), "->", tostring(want))
  vim.schedule(function()
    for i, item in ipairs(items) do
      if want and item:sub(1, #want) == want then
        record.picked = item
        return on_choice(item, i)
      end
    end
    on_choice(nil, nil)
  end)
end
for _, pattern in ipairs({ "QuillModelOffer", "QuillDownload", "QuillModelPulled", "QuillModelSwitched", "QuillModelSteps", "QuillModelState" }) do
  api.nvim_create_autocmd("User", {
    pattern = pattern,
    callback = function(ev)
      table.insert(results.events, { name = pattern, data = ev.data, t = uv.now() })
    end,
  })
end

local function events(name, since)
  return vim.tbl_filter(function(e)
    return e.name == name and e.t >= (since or 0)
  end, results.events)
end

local function notes_matching(pattern, plain, level)
  return vim.tbl_filter(function(n)
    return n.msg:find(pattern, 1, plain) ~= nil and (level == nil or n.level == level)
  end, results.notes)
end

--- quill/status, asked asynchronously (the test never blocks the loop it runs on).
local function status()
  local client = quill.clients()[1]
  if not client then
    return nil
  end
  local answer
  require("quill.ghost").call(client, "request", "quill/status", vim.empty_dict(), function(err, res)
    answer = { err = err, result = res }
  end, next(client.attached_buffers or {}))
  if not wait_until(function()
    return answer
  end, 10000) then
    return nil, "quill/status did not answer in 10 s"
  end
  return answer.result, answer.err
end

local function read_state()
  local f = io.open(offer.state_path(), "r")
  if not f then
    return nil
  end
  local text = f:read("*a")
  f:close()
  local ok, data = pcall(vim.json.decode, text)
  return ok and data or text
end

local function start(user_settings)
  quill.setup({
    cmd = { server, "--log-level", os.getenv("QUILL_TEST_SERVER_LOG_LEVEL") or "info" },
    settings = vim.tbl_extend("force", { threads = tonumber(os.getenv("QUILL_TEST_THREADS") or "1") }, user_settings or {}),
  })
  vim.cmd.edit(vim.fn.fnameescape(file))
  local ready = wait_until(function()
    return quill.model_state.state == "ready" or quill.model_state.state == "error"
  end, 120000)
  return step("the server starts and its model loads", ready and quill.model_state.state == "ready", quill.model_state)
end

--- The automatic question of this server start is answered: the offer, or false.
local function wait_answer()
  local client = quill.clients()[1]
  return client and wait_until(function()
    return offer.answered[client.id] ~= nil
  end, 30000) and offer.answered[client.id]
end

local function first()
  if not start() then
    return
  end
  local client = quill.clients()[1]
  local client_id = client.id
  local st0 = status() or {}
  step("the server starts on the demo model", st0.model == DEMO or (st0.description or ""):find("SmolLM2") ~= nil, { model = st0.model, description = st0.description })

  -- 1. The offer: one notify with the server's message, then a choice.
  local shown = wait_until(function()
    return #results.selects >= 1
  end, 30000)
  local the_offer = offer.answered[client_id]
  if not step("the offer comes after the model is ready, as a choice", shown and type(the_offer) == "table", { answered = the_offer, selects = results.selects }) then
    return
  end
  results.offer = the_offer
  step("the offer is for the model that fits", the_offer.model == model_id and the_offer.offline == false, the_offer)
  local told = notes_matching(the_offer.message, true)
  step("the user is told once, with the server's message", #told == 1 and #events("QuillModelOffer") == 1, told)
  local sel = results.selects[1]
  step("the choice: download (name, size) and switch, or not now", #sel.items == 2
    and sel.items[1] == ("Download %s (%s) and switch"):format(the_offer.name, the_offer.size) and sel.items[2] == "Not now", sel)

  -- 2. Download, with progress; cancelled after the first report.
  local t_pull = uv.now()
  local first_report = wait_until(function()
    for _, e in ipairs(events("QuillDownload", t_pull)) do
      if e.data.kind == "report" and e.data.percentage then
        return e
      end
    end
  end, 30000)
  step("the download reports progress with a percentage", first_report ~= nil and offer.download ~= nil, first_report)
  step("the statusline shows the download", quill.statusline():find("^Quill: downloading") ~= nil, quill.statusline())
  vim.cmd("QuillCancelDownload")
  step(":QuillCancelDownload stops it", offer.download == nil and #notes_matching("download cancelled", true, vim.log.levels.WARN) == 1, results.notes[#results.notes])
  sleep(500)
  local st_cancel = status() or {}
  step("a cancelled download does not switch", #events("QuillModelPulled", t_pull) == 1 and events("QuillModelPulled", t_pull)[1].data.cancelled
    and st_cancel.model == DEMO and #events("QuillModelSwitched") == 0, { model = st_cancel.model, events = events("QuillModelPulled", t_pull) })

  -- 3. :QuillRecommend offers it again (again = true); this time the download runs to the end.
  local t_again = uv.now()
  vim.cmd("QuillRecommend")
  local again = wait_until(function()
    return #results.selects >= 2
  end, 30000)
  step(":QuillRecommend offers the model again", again ~= nil and results.selects[2].items[1] == sel.items[1], results.selects[2])
  local pulled = wait_until(function()
    return events("QuillModelPulled", t_again)[1]
  end, 120000)
  local res = pulled and pulled.data.result
  step("quill/pullModel succeeds", type(res) == "table" and res.model == model_id and tostring(res.path):match("%.gguf$") ~= nil, pulled and pulled.data)
  local reports = vim.tbl_filter(function(n)
    return n.msg:find("^Quill: Downloading ") and n.msg:find("%d+%%") and n.t >= t_again
  end, results.notes)
  results.progress_notes = vim.tbl_map(function(n)
    return n.msg
  end, notes_matching("^Quill: Downloading ", false))
  step("progress is shown with a percentage (throttled)", #reports >= 1 and #reports <= 12, results.progress_notes)

  -- 4. The switch, without restarting anything.
  local switched = wait_until(function()
    return events("QuillModelSwitched")[1]
  end, 60000)
  local st = status() or {}
  step("the server switches to the new model (quill/status)", switched ~= nil and st.model == model_id and st.state == "ready",
    { model = st.model, state = st.state, description = st.description, detail = st.detail })
  step("same editor, same server process (no restart)", quill.clients()[1] and quill.clients()[1].id == client_id and #quill.clients() == 1)
  step("the user is told that Quill now uses it", #notes_matching("now uses " .. the_offer.name, true) == 1, results.notes[#results.notes])
  step("the client's settings name the model", quill.server_settings().model == model_id
    and quill.clients()[1].settings.quill.model == model_id, quill.server_settings())
  local state = read_state()
  results.state_file = state
  step("the state file remembers the choice", type(state) == "table" and type(state.model) == "table"
    and state.model.id == model_id and state.model.settings.model == model_id, { path = offer.state_path(), state = state })
  step("no error was shown", #vim.tbl_filter(function(n)
    return n.level == vim.log.levels.ERROR
  end, results.notes) == 0, results.notes)

  -- 5. On the new model nothing fits better: :QuillRecommend says so.
  local n_selects = #results.selects
  vim.cmd("QuillRecommend")
  local said = wait_until(function()
    return #notes_matching("better than the current one", true) > 0
  end, 30000)
  step(":QuillRecommend on the best model says nothing fits better", said ~= nil and #results.selects == n_selects, results.notes[#results.notes])
end

local function again()
  if not start() then
    return
  end
  local st = status() or {}
  step("the next start uses the remembered model", st.model == model_id and quill.options.settings.model == model_id,
    { status = st.model, setting = quill.options.settings.model })
  local answer = wait_answer()
  sleep(300)
  step("the offer is not shown again", answer == false and #results.selects == 0 and #events("QuillModelOffer") == 0, { answer = answer, selects = results.selects })
end

local function user_model()
  if not start({ model = DEMO }) then
    return
  end
  local st = status() or {}
  step("setup{}'s own model wins over the remembered one", st.model == DEMO and quill.options.settings.model == DEMO, { status = st.model })
  local answer = wait_answer()
  sleep(300)
  step("on the demo model again, the offer made once is not made again", answer == false and #results.selects == 0
    and #events("QuillModelOffer") == 0, { answer = answer, selects = results.selects })
end

local function offline()
  if not start() then
    return
  end
  local shown = wait_until(function()
    return #results.selects >= 1
  end, 30000)
  local the_offer = quill.clients()[1] and offer.answered[quill.clients()[1].id]
  if not step("the offer comes, as a choice", shown and type(the_offer) == "table", { answered = the_offer }) then
    return
  end
  results.offer = the_offer
  step("the offer says it is offline", the_offer.offline == true and type(the_offer.manualSteps) == "string" and the_offer.manualSteps ~= "", the_offer)
  step("the user is told once", #notes_matching(the_offer.message, true) == 1)
  local sel = results.selects[1]
  step("the choice: the manual steps or not now (no download)", vim.deep_equal(sel.items, { "Show the manual steps", "Not now" }), sel)
  local steps_ev = wait_until(function()
    return events("QuillModelSteps")[1]
  end, 10000)
  local text = steps_ev and api.nvim_buf_is_valid(steps_ev.data.buf) and table.concat(api.nvim_buf_get_lines(steps_ev.data.buf, 0, -1, false), "\n") or ""
  results.steps_text = text
  step("the manual steps are shown in a scratch buffer", text:find(the_offer.manualSteps, 1, true) ~= nil
    and vim.bo[steps_ev.data.buf].buftype == "nofile", text)
  step("no download was started", offer.download == nil and #events("QuillDownload") == 0 and #events("QuillModelPulled") == 0)

  -- A download asked for anyway (say, from an older offer) fails at once, with the steps.
  local t_pull = uv.now()
  offer.pull(quill.clients()[1], the_offer)
  local pulled = wait_until(function()
    return events("QuillModelPulled", t_pull)[1]
  end, 20000)
  local err = pulled and pulled.data.error
  local shown_err = notes_matching("failed: ", true, vim.log.levels.ERROR)
  step("a pull while offline fails fast with an error the user sees (ERROR)", type(err) == "table" and #shown_err == 1
    and offer.download == nil, { error = err, notes = shown_err, ms = uv.now() - t_pull })
  sleep(300)
  local st = status() or {}
  step("the server stays on the demo model, ready", st.model == DEMO and st.state == "ready", { model = st.model, state = st.state })
  step("nothing is remembered", read_state() == nil, read_state())
end

h.run(function()
  local phases = { first = first, again = again, user_model = user_model, offline = offline }
  assert(phases[phase], "unknown QUILL_TEST_PHASE " .. phase)()
  finish()
end)
