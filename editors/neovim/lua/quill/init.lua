--- Quill for Neovim: a thin client for the quill-lsp server.
---
---   require("quill").setup({ settings = { model = "smollm2-135m-instruct" } })
---
--- Starts the server with vim.lsp.start for the configured filetypes and shows its
--- suggestions as ghost text: Neovim 0.12's vim.lsp.inline_completion where present,
--- Quill's own extmarks (lua/quill/ghost.lua) on 0.10 and 0.11.
local M = {}

local api = vim.api
local uv = vim.uv or vim.loop
local config = require("quill.config")
local ghost = require("quill.ghost")
local explain = require("quill.explain")
local offer = require("quill.offer")

local NAME = "quill"
local MAX_RESTARTS = 5
local HEALTHY_AFTER_S = 60

M.options = vim.deepcopy(config.defaults)
M.setup_done = false
M.problems = {}
--- Last `quill/modelState` from the server: loading | ready | error (starting before the first).
M.model_state = { state = "starting", detail = "" }
M.server = { cmd = nil, tried = {} }
--- settings.model as the user's own setup{} sets it (nil: a model chosen from an offer may apply).
M.user_model = nil

local enabled = true
local stopping = false
local crashes = 0
local started_at = 0
local group = api.nvim_create_augroup("quill", { clear = true })

local function notify(msg, level)
  vim.notify("Quill: " .. msg, level or vim.log.levels.INFO)
end

--- True when the 0.12+ native inline completion is used.
function M.native()
  local want = M.options.native
  local has = vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.enable ~= nil
  if want == "auto" then
    return has
  end
  return want == true and has
end

function M.is_enabled()
  return enabled
end

local function clients(bufnr)
  local get = vim.lsp.get_clients or vim.lsp.get_active_clients
  return get({ name = NAME, bufnr = bufnr })
end
M.clients = clients

local function root_dir(bufnr)
  local root = vim.fs.root and vim.fs.root(bufnr, M.options.root_markers)
  if root then
    return root
  end
  local name = api.nvim_buf_get_name(bufnr)
  if name ~= "" then
    return vim.fs.dirname(name)
  end
  return uv.cwd()
end

local function executable(path)
  return path and vim.fn.executable(path) == 1
end

--- The server command: `cmd` if set; else quill-lsp in the project's .venv/venv, on PATH,
--- or in ~/.local/bin.
---@return string[]|nil cmd, string[] tried
function M.find_server(bufnr)
  local tried = {}
  local cmd = M.options.cmd
  if cmd then
    local exe = vim.fn.expand(cmd[1])
    table.insert(tried, exe)
    if not executable(exe) then
      return nil, tried
    end
    return vim.list_extend({ exe }, vim.list_slice(cmd, 2)), tried
  end
  local dirs = {}
  if bufnr and api.nvim_buf_is_valid(bufnr) then
    table.insert(dirs, root_dir(bufnr))
  end
  table.insert(dirs, uv.cwd())
  local candidates = {}
  for _, dir in ipairs(dirs) do
    for _, venv in ipairs({ ".venv", "venv" }) do
      table.insert(candidates, dir .. "/" .. venv .. "/bin/quill-lsp")
    end
  end
  local on_path = vim.fn.exepath("quill-lsp")
  table.insert(candidates, on_path ~= "" and on_path or "quill-lsp (PATH)")
  table.insert(candidates, vim.fn.expand("~/.local/bin/quill-lsp"))
  for _, c in ipairs(candidates) do
    table.insert(tried, c)
    if executable(c) then
      local out = { c }
      if M.options.log_level then
        vim.list_extend(out, { "--log-level", M.options.log_level })
      end
      return out, tried
    end
  end
  return nil, tried
end

--- The settings sent to the server (camelCase), `enabled` included.
function M.server_settings()
  local s = vim.deepcopy(M.options.settings)
  s.enabled = enabled
  return s
end

local function send_settings()
  local settings = M.server_settings()
  for _, client in ipairs(clients()) do
    client.settings = { quill = settings }
    ghost.call(client, "notify", "workspace/didChangeConfiguration", { settings = { quill = settings } })
  end
end

--- Merge `settings` into the server settings and send them all (the server reloads the model
--- when `model` changed).
function M.apply_settings(settings)
  M.options.settings = vim.tbl_extend("force", M.options.settings, settings)
  send_settings()
end

local function on_model_state(_, params, ctx)
  if type(params) ~= "table" then
    return
  end
  M.model_state = { state = params.state or "?", detail = params.detail or "" }
  if params.state == "error" then
    notify("model failed: " .. (params.detail or "?"), vim.log.levels.ERROR)
  end
  api.nvim_exec_autocmds("User", { pattern = "QuillModelState", modeline = false, data = M.model_state })
  pcall(vim.cmd.redrawstatus)
  -- The first `ready` of a server start asks for a model offer (quill/modelOffer).
  offer.on_model_state(ctx and ctx.client_id, params.state)
end

-- Where the cursor settled (a buffer entered, a jump, a move to another line): the server
-- evaluates the prompt a suggestion there will need before it is asked for.
local CURSOR_DEBOUNCE_MS = 150
local cursor_timers, cursor_sent = {}, {}

local function report_cursor(bufnr)
  local timer = cursor_timers[bufnr]
  if timer == nil then
    timer = (vim.uv or vim.loop).new_timer()
    cursor_timers[bufnr] = timer
  end
  timer:stop()
  timer:start(CURSOR_DEBOUNCE_MS, 0, vim.schedule_wrap(function()
    if not enabled or not api.nvim_buf_is_valid(bufnr) or api.nvim_get_current_buf() ~= bufnr then
      return
    end
    local row = api.nvim_win_get_cursor(0)[1]
    if cursor_sent[bufnr] == row then
      return
    end
    cursor_sent[bufnr] = row
    for _, client in ipairs(clients(bufnr)) do
      local params = vim.lsp.util.make_position_params(0, client.offset_encoding or "utf-16")
      pcall(ghost.call, client, "notify", "quill/didMoveCursor", params)
    end
  end))
end

local function forget_cursor(bufnr)
  local timer = cursor_timers[bufnr]
  if timer ~= nil then
    timer:stop()
    timer:close()
  end
  cursor_timers[bufnr], cursor_sent[bufnr] = nil, nil
end

local function buffer_autocmds(bufnr)
  local g = api.nvim_create_augroup("quill.buf." .. bufnr, { clear = true })
  api.nvim_create_autocmd({ "BufEnter", "CursorMoved", "InsertEnter" }, {
    group = g,
    buffer = bufnr,
    callback = function()
      report_cursor(bufnr)
    end,
  })
  api.nvim_create_autocmd("BufLeave", {
    group = g,
    buffer = bufnr,
    callback = function()
      cursor_sent[bufnr] = nil -- coming back reports the cursor again
    end,
  })
  api.nvim_create_autocmd("BufWipeout", {
    group = g,
    buffer = bufnr,
    callback = function()
      forget_cursor(bufnr)
    end,
  })
  report_cursor(bufnr)
  if M.native() then
    return
  end
  api.nvim_create_autocmd({ "TextChangedI", "CursorMovedI" }, {
    group = g,
    buffer = bufnr,
    callback = function()
      if enabled then
        ghost.on_change(bufnr)
      end
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = g,
    buffer = bufnr,
    callback = function()
      ghost.reset(bufnr)
    end,
  })
  api.nvim_create_autocmd("BufWipeout", {
    group = g,
    buffer = bufnr,
    callback = function()
      ghost.detach(bufnr)
    end,
  })
end

local function on_attach(client, bufnr)
  buffer_autocmds(bufnr)
  if M.native() then
    pcall(vim.lsp.inline_completion.enable, enabled, { bufnr = bufnr, client_id = client.id })
  end
end

local schedule_restart

local function on_exit(code, signal, client_id)
  vim.schedule(function()
    offer.on_exit(client_id)
  end)
  if stopping then
    return
  end
  vim.schedule(function()
    M.model_state = { state = "error", detail = ("server exited (code %s, signal %s)"):format(code, signal) }
    if code ~= 0 or signal ~= 0 then
      schedule_restart()
    end
  end)
end

--- Start (or reuse) the server for `bufnr` and attach it.
---@return integer|nil client_id
function M.attach(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  if vim.bo[bufnr].buftype ~= "" then
    return nil
  end
  local cmd, tried = M.find_server(bufnr)
  M.server = { cmd = cmd, tried = tried }
  if not cmd then
    if not M._warned_missing then
      M._warned_missing = true
      notify(
        "quill-lsp was not found (looked at " .. table.concat(tried, ", ") .. "). Install the server or set cmd in setup{}.",
        vim.log.levels.ERROR
      )
    end
    return nil
  end
  local settings = M.server_settings()
  local had_client = #clients() > 0
  local client_id = vim.lsp.start({
    name = NAME,
    cmd = cmd,
    root_dir = root_dir(bufnr),
    init_options = settings,
    settings = { quill = settings },
    handlers = {
      ["window/showDocument"] = explain.show_document,
      ["quill/modelState"] = on_model_state,
      ["quill/refreshInlineCompletion"] = function(_, params, ctx)
        local client = vim.lsp.get_client_by_id(ctx.client_id)
        if client and enabled and not M.native() then
          ghost.refresh(client, params)
        end
      end,
    },
    on_init = function(client)
      started_at = uv.now()
      if not M.options.completion_menu then
        -- Ghost text shows the suggestion; a completion source asking too would make two
        -- requests per keystroke, and the server keeps only the latest.
        client.server_capabilities.completionProvider = nil
      end
    end,
    on_attach = on_attach,
    on_exit = on_exit,
  }, { bufnr = bufnr })
  if client_id and not had_client then
    M.model_state = { state = "starting", detail = "" }
  end
  return client_id
end

local function filetype_matches(ft)
  if ft == nil or ft == "" then
    return false
  end
  for _, want in ipairs(M.options.filetypes) do
    if want == "*" or want == ft then
      return true
    end
  end
  return false
end

local function attach_all()
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and filetype_matches(vim.bo[bufnr].filetype) then
      M.attach(bufnr)
    end
  end
end

--- Stop every Quill server (and wait up to 3 s for them to exit).
function M.stop()
  stopping = true
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    ghost.reset(bufnr)
  end
  local running = clients()
  for _, client in ipairs(running) do
    ghost.call(client, "stop")
  end
  vim.wait(3000, function()
    return #clients() == 0
  end, 50)
  for _, client in ipairs(clients()) do
    ghost.call(client, "stop", true)
  end
  stopping = false
end

function M.restart()
  M.stop()
  crashes = 0
  M.model_state = { state = "starting", detail = "" }
  attach_all()
end

schedule_restart = function()
  if not M.options.restart_on_crash then
    return
  end
  if uv.now() - started_at > HEALTHY_AFTER_S * 1000 then
    crashes = 0
  end
  if crashes >= MAX_RESTARTS then
    notify(("the server stopped %d times in a row; not restarting (:Quill restart to try again)"):format(crashes + 1), vim.log.levels.ERROR)
    return
  end
  local delay = math.min(30000, 1000 * 2 ^ crashes)
  crashes = crashes + 1
  notify(("the server exited; restarting in %d s"):format(delay / 1000), vim.log.levels.WARN)
  vim.defer_fn(function()
    if #clients() == 0 then
      attach_all()
    end
  end, delay)
end

function M.enable(on)
  enabled = on ~= false
  if not enabled then
    for _, bufnr in ipairs(api.nvim_list_bufs()) do
      ghost.reset(bufnr)
    end
  end
  if M.native() then
    pcall(vim.lsp.inline_completion.enable, enabled)
  end
  send_settings()
end

function M.toggle()
  M.enable(not enabled)
  notify(enabled and "on" or "off")
end

--- Change the model (a manifest id or a .gguf path); the server reloads it.
function M.set_model(model)
  M.options.settings.model = model
  send_settings()
end

--- Pick a model from `quill-lsp models list` with vim.ui.select.
function M.pick_model()
  local cmd = M.server.cmd or M.find_server(api.nvim_get_current_buf())
  if not cmd then
    notify("quill-lsp was not found", vim.log.levels.ERROR)
    return
  end
  local out = vim.fn.systemlist({ cmd[1], "models", "list" })
  local rows = {}
  if vim.v.shell_error == 0 then
    -- A header line (ID ...), one row per model, then a blank line and notes.
    for i, line in ipairs(out) do
      if i > 1 and not line:match("%S") then
        break
      elseif i > 1 then
        table.insert(rows, line)
      end
    end
  end
  if #rows == 0 then
    notify("`quill-lsp models list` failed:\n" .. table.concat(out, "\n"), vim.log.levels.ERROR)
    return
  end
  vim.ui.select(rows, { prompt = "Quill model (current: " .. tostring(M.options.settings.model or "default") .. ")" }, function(choice)
    if choice then
      M.set_model(choice:match("^(%S+)"))
    end
  end)
end

--- Accept the shown suggestion; false when none is shown.
---@param what? "all"|"word"|"line"
function M.accept(what)
  if M.native() then
    if what and what ~= "all" then
      return false -- partial accept needs Quill's own rendering (native = false)
    end
    local ok, accepted = pcall(vim.lsp.inline_completion.get, { bufnr = 0 })
    return ok and accepted == true
  end
  return ghost.accept(what)
end

function M.dismiss()
  ghost.reset()
end

--- A short status for statuslines: "Quill", "Quill: loading", "Quill: generating", ...
function M.statusline()
  if #clients() == 0 then
    return ""
  end
  if not enabled then
    return "Quill: off"
  end
  local downloading = offer.progress_text()
  if downloading then
    return "Quill: " .. downloading
  end
  local s = M.model_state.state
  if s == "ready" then
    return ghost.busy and ghost.busy() and "Quill: generating" or "Quill"
  end
  return "Quill: " .. s
end

--- quill/status from a running server (synchronous, up to `timeout_ms`).
function M.status(timeout_ms)
  local client = clients()[1]
  if not client then
    return nil, "no Quill server is running (open a file of a configured filetype)"
  end
  local bufnr = next(client.attached_buffers or {}) or api.nvim_get_current_buf()
  local resp, err = ghost.call(client, "request_sync", "quill/status", vim.empty_dict(), timeout_ms or 3000, bufnr)
  if not resp then
    return nil, tostring(err)
  end
  if resp.err then
    return nil, resp.err.message or vim.inspect(resp.err)
  end
  return resp.result
end

local function show_status()
  local lines = {}
  local s, err = M.status()
  table.insert(lines, "server: " .. (M.server.cmd and table.concat(M.server.cmd, " ") or "not found"))
  if s then
    table.insert(lines, ("quill-lsp %s: %s%s"):format(s.version or "?", s.state or "?", s.detail and s.detail ~= "" and (" (" .. s.detail .. ")") or ""))
    table.insert(lines, ("model: %s%s"):format(s.description or s.model or "?", s.device and (" on " .. s.device) or ""))
    if s.error and s.error ~= vim.NIL then
      table.insert(lines, "error: " .. tostring(s.error))
    end
  else
    table.insert(lines, err)
  end
  table.insert(lines, "completions: " .. (enabled and "on" or "off") .. ", ghost text: " .. (M.native() and "native (0.12)" or "extmarks"))
  if offer.download then
    table.insert(lines, offer.download.title .. ": " .. offer.progress_text():gsub("^downloading ", "") .. " (:QuillCancelDownload stops it)")
  end
  local last = ghost.stats.last
  if last then
    table.insert(lines, ("last suggestion: %.0f ms after the keystroke (request %.0f ms, debounce %d ms)"):format(last.keystroke_to_ghost_ms, last.request_ms, last.debounce_ms))
  end
  notify(table.concat(lines, "\n"))
end

local subcommands = {
  enable = function() M.enable(true) end,
  disable = function() M.enable(false) end,
  toggle = M.toggle,
  restart = M.restart,
  stop = M.stop,
  status = show_status,
  log = function() vim.cmd("tabnew " .. vim.fn.fnameescape(vim.lsp.get_log_path())) end,
  model = function(arg)
    if arg and arg ~= "" then
      M.set_model(arg)
    else
      M.pick_model()
    end
  end,
  suggest = function() ghost.suggest() end,
  recommend = function() M.recommend() end,
  cancel = function() offer.cancel() end,
}

--- :QuillRecommend: ask the server which model fits this machine best, and offer it.
function M.recommend()
  local client = clients(api.nvim_get_current_buf())[1] or clients()[1]
  offer.recommend(client)
end

--- :QuillCancelDownload
function M.cancel_download()
  offer.cancel()
end

function M.command(args)
  local sub, rest = (args or ""):match("^%s*(%S*)%s*(.-)%s*$")
  local fn = subcommands[sub ~= "" and sub or "status"]
  if not fn then
    notify("unknown subcommand " .. sub .. "; one of " .. table.concat(vim.tbl_keys(subcommands), ", "), vim.log.levels.ERROR)
    return
  end
  fn(rest)
end

function M.complete_command(arglead)
  local out = {}
  for name in pairs(subcommands) do
    if name:sub(1, #arglead) == arglead then
      table.insert(out, name)
    end
  end
  table.sort(out)
  return out
end

local function feed(keys, noremap)
  api.nvim_feedkeys(keys, noremap and "n" or "m", false)
end

--- What `key` did before Quill mapped it (a mapping of the user or of another plugin, or the key itself).
local function fallback_for(key)
  local prev = vim.fn.maparg(key, "i", false, true)
  if type(prev) ~= "table" or vim.tbl_isempty(prev) or (prev.desc or ""):match("^Quill") then
    prev = nil
  end
  return function()
    if not prev then
      feed(vim.keycode(key), true)
      return
    end
    if prev.callback then
      local r = prev.callback()
      if prev.expr == 1 and type(r) == "string" then
        -- replace_keycodes: the mapping returns key notation ("<Tab>") for Neovim to replace.
        feed(prev.replace_keycodes == 1 and vim.keycode(r) or r, prev.noremap == 1)
      end
    elseif prev.rhs and prev.rhs ~= "" then
      local rhs = prev.expr == 1 and api.nvim_eval(prev.rhs) or prev.rhs
      feed(vim.keycode(rhs), prev.noremap == 1)
    end
  end
end

local function map_keys()
  local k = M.options.keymaps
  local function map(key, what, desc)
    if not key then
      return
    end
    local fallback = fallback_for(key)
    vim.keymap.set("i", key, function()
      if not M.accept(what) then
        fallback()
      end
    end, { desc = desc, silent = true })
  end
  map(k.accept, "all", "Quill: accept the suggestion")
  if not M.native() then
    map(k.accept_word, "word", "Quill: accept the next word")
    map(k.accept_line, "line", "Quill: accept the next line")
  end
  if k.dismiss then
    local fallback = fallback_for(k.dismiss)
    vim.keymap.set("i", k.dismiss, function()
      if ghost.visible() then
        ghost.reset()
      else
        fallback()
      end
    end, { desc = "Quill: dismiss the suggestion", silent = true })
  end
end

---@param opts? table see lua/quill/config.lua
function M.setup(opts)
  local options, problems = config.resolve(opts)
  M.user_model = opts and type(opts.settings) == "table" and opts.settings.model or nil
  -- A model chosen from an offer earlier, unless setup{} names one (keys setup{} sets win).
  local chosen = M.user_model == nil and offer.remembered()
  if chosen then
    options.settings = vim.tbl_extend("keep", options.settings, chosen.settings)
  end
  M.options = options
  M.problems = problems
  for _, p in ipairs(problems) do
    notify(p, vim.log.levels.WARN)
  end
  if options.settings.enabled ~= nil then
    enabled = options.settings.enabled
  end
  api.nvim_set_hl(0, "QuillGhostText", { link = "Comment", default = true })
  ghost.configure({
    debounce_ms = options.debounce_ms,
    hl_group = options.hl_group,
    enabled = function()
      return enabled
    end,
  })
  explain.configure(options.explain)
  api.nvim_clear_autocmds({ group = group })
  api.nvim_create_autocmd("FileType", {
    group = group,
    callback = function(ev)
      if filetype_matches(vim.bo[ev.buf].filetype) then
        M.attach(ev.buf)
      end
    end,
  })
  api.nvim_create_autocmd("ColorScheme", {
    group = group,
    callback = function()
      api.nvim_set_hl(0, "QuillGhostText", { link = "Comment", default = true })
    end,
  })
  map_keys()
  M.setup_done = true
  attach_all() -- buffers already open when setup runs (lazy loading)
end

return M
