--- The first-run model offer: when the server runs its small demo model and a code model
--- fits this machine, the server says so once (quill/modelOffer); the user can download it
--- (quill/pullModel, with $/progress) and Quill switches to it without a restart
--- (workspace/didChangeConfiguration).  The choice is remembered in
--- stdpath("data")/quill/state.json for the next Neovim start, unless setup{} sets `model`.
---
--- Everything is asynchronous: requests with callbacks, progress through the LspProgress
--- autocmd, the choice through vim.ui.select (shown once the user is out of insert mode).
local M = {}

local api = vim.api
local uv = vim.uv or vim.loop
local call = require("quill.ghost").call

local METHOD_NOT_FOUND = -32601
--- Progress notifications: the first report, then one per 10 % step, at most one a second
--- (the statusline shows every report).
local PROGRESS_MIN_INTERVAL_MS = 1000

--- client_id -> true once quill/modelOffer was asked for that server start.
M.asked = {}
--- client_id -> the answer: the offer table, or false (nothing to offer, or an error).
M.answered = {}
---@type { client_id: integer, id: integer?, token: string, offer: table, title: string, percentage: number?, message: string?, shown_at: integer, shown_step: integer?, cancelled: boolean?, autocmd: integer? }|nil
M.download = nil
---@type { client_id: integer, offer: table, loading: boolean? }|nil
M.switching = nil

local function notify(msg, level)
  vim.notify("Quill: " .. msg, level or vim.log.levels.INFO)
end

local function event(pattern, data)
  api.nvim_exec_autocmds("User", { pattern = pattern, modeline = false, data = data })
end

local function request(client, method, params, handler)
  local bufnr = next(client.attached_buffers or {})
  local ok, id = call(client, "request", method, params, vim.schedule_wrap(handler), bufnr)
  if not ok then
    return nil
  end
  return id
end

-- -------------------------------------------------------------------------------------
-- The remembered choice

function M.state_path()
  return vim.fn.stdpath("data") .. "/quill/state.json"
end

---@return table
function M.read_state()
  local f = io.open(M.state_path(), "r")
  if not f then
    return {}
  end
  local text = f:read("*a")
  f:close()
  local ok, data = pcall(vim.json.decode, text)
  return ok and type(data) == "table" and data or {}
end

function M.write_state(state)
  local path = M.state_path()
  vim.fn.mkdir(vim.fs.dirname(path), "p")
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then
    notify("could not remember the model in " .. path .. ": " .. tostring(err), vim.log.levels.WARN)
    return
  end
  f:write(vim.json.encode(state))
  f:close()
  os.rename(tmp, path)
end

--- The model chosen from an offer earlier: { id, name, settings } or nil.
function M.remembered()
  local m = M.read_state().model
  if type(m) ~= "table" or type(m.settings) ~= "table" or type(m.settings.model) ~= "string" then
    return nil
  end
  local keys = require("quill.config").SERVER_KEYS
  for key, value in pairs(m.settings) do
    if keys[key] ~= type(value) then
      m.settings[key] = nil -- not a setting (any more), or not of its type
    end
  end
  return m
end

-- -------------------------------------------------------------------------------------
-- The offer

--- Run `fn` when the user is in Normal mode (a choice popping up mid-typing would eat keys).
local function when_idle(fn)
  local mode = api.nvim_get_mode()
  if mode.mode == "n" and not mode.blocking then
    fn()
    return
  end
  api.nvim_create_autocmd("ModeChanged", {
    pattern = "*:n",
    once = true,
    callback = function()
      vim.schedule(fn)
    end,
  })
end

local function show_steps(offer)
  local lines = { ("Quill: how to install %s (%s) by hand"):format(offer.name or offer.model, offer.size or "?"), "" }
  vim.list_extend(lines, vim.split(offer.manualSteps or "", "\n", { plain = true }))
  vim.list_extend(lines, { "", "In Neovim the setting is: require(\"quill\").setup({ settings = { model = \"" .. tostring(offer.model) .. "\" } })" })
  local buf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].modifiable = false
  vim.bo[buf].filetype = "markdown"
  pcall(api.nvim_buf_set_name, buf, "quill://model-steps")
  vim.cmd("botright split")
  local win = api.nvim_get_current_win()
  api.nvim_win_set_buf(win, buf)
  api.nvim_win_set_height(win, math.min(#lines + 1, 20))
  vim.keymap.set("n", "q", "<Cmd>close<CR>", { buffer = buf, nowait = true, desc = "Quill: close" })
  event("QuillModelSteps", { buf = buf, offer = offer })
  return buf
end
M.show_steps = show_steps

--- Tell the user about `offer` and let them choose (vim.ui.select).
function M.present(client, offer)
  event("QuillModelOffer", offer)
  notify(offer.message or ("%s fits this machine"):format(offer.name or offer.model))
  when_idle(function()
    local choices, actions
    if offer.offline then
      choices, actions = { "Show the manual steps", "Not now" }, { "steps", "later" }
    elseif offer.installed then
      choices, actions = { ("Switch to %s (already downloaded)"):format(offer.name or offer.model), "Not now" }, { "switch", "later" }
    else
      choices = { ("Download %s (%s) and switch"):format(offer.name or offer.model, offer.size or "?"), "Not now" }
      actions = { "pull", "later" }
    end
    vim.ui.select(choices, { prompt = "Quill: use " .. (offer.name or offer.model) .. "?", kind = "quill.model_offer" }, function(_, idx)
      local action = idx and actions[idx] or "later"
      if action == "steps" then
        show_steps(offer)
      elseif action == "pull" then
        M.pull(client, offer)
      elseif action == "switch" then
        M.switch(client, offer)
      else
        notify(":QuillRecommend offers it again")
      end
    end)
  end)
end

--- Ask the server for an offer (`again`: even when it was offered before; a user command).
function M.ask(client, again)
  M.asked[client.id] = true
  local id = request(client, "quill/modelOffer", again and { again = true } or vim.empty_dict(), function(err, result)
    if err then
      M.answered[client.id] = false
      if again or err.code ~= METHOD_NOT_FOUND then
        notify("quill/modelOffer failed: " .. tostring(err.message), again and vim.log.levels.ERROR or vim.log.levels.WARN)
      end
      return
    end
    if type(result) ~= "table" then
      M.answered[client.id] = false
      if again then
        notify("no model that fits this machine is better than the current one")
      end
      return
    end
    M.answered[client.id] = result
    M.present(client, result)
  end)
  if not id and again then
    notify("the server is not running", vim.log.levels.ERROR)
  end
end

--- :QuillRecommend
function M.recommend(client)
  if not client then
    notify("no Quill server is running (open a file of a configured filetype)", vim.log.levels.ERROR)
    return
  end
  M.ask(client, true)
end

-- -------------------------------------------------------------------------------------
-- The download

local function finish(dl)
  if dl.autocmd then
    pcall(api.nvim_del_autocmd, dl.autocmd)
    dl.autocmd = nil
  end
  if M.download == dl then
    M.download = nil
  end
  pcall(vim.cmd.redrawstatus)
end

local function on_progress(dl, data)
  if type(data) ~= "table" or data.client_id ~= dl.client_id or type(data.params) ~= "table" then
    return
  end
  if data.params.token ~= dl.token or type(data.params.value) ~= "table" then
    return
  end
  local value = data.params.value
  if value.kind == "begin" then
    dl.title = value.title or dl.title
  elseif value.kind == "report" then
    dl.percentage = tonumber(value.percentage) or dl.percentage
    dl.message = value.message or dl.message
    local step = dl.percentage and math.floor(dl.percentage / 10) or -1
    local now = uv.now()
    if dl.shown_step == nil or (step > dl.shown_step and now - dl.shown_at >= PROGRESS_MIN_INTERVAL_MS) then
      dl.shown_step, dl.shown_at = step, now
      local pct = dl.percentage and (" %d%%"):format(dl.percentage) or ""
      local msg = dl.message and dl.message ~= "" and (" (" .. dl.message .. ")") or ""
      notify(dl.title .. ":" .. pct .. msg)
    end
  elseif value.kind == "end" then
    dl.message = value.message or dl.message
  end
  event("QuillDownload", { kind = value.kind, title = dl.title, percentage = dl.percentage, message = value.message })
  pcall(vim.cmd.redrawstatus)
end

--- Download `offer.model` with progress, then switch to it.
function M.pull(client, offer)
  if M.download then
    notify("a download is already running (:QuillCancelDownload stops it)", vim.log.levels.WARN)
    return
  end
  local dl = {
    client_id = client.id,
    token = ("quill-pull-%d-%d"):format(uv.hrtime(), math.random(1, 1e6)),
    offer = offer,
    title = "Downloading " .. (offer.name or offer.model),
    shown_at = 0,
  }
  dl.autocmd = api.nvim_create_autocmd("LspProgress", {
    callback = function(ev)
      on_progress(dl, ev.data)
    end,
  })
  M.download = dl
  dl.id = request(client, "quill/pullModel", { model = offer.model, workDoneToken = dl.token }, function(err, result)
    finish(dl)
    if dl.cancelled then
      return
    end
    if err then
      event("QuillModelPulled", { error = err })
      notify("the download of " .. (offer.name or offer.model) .. " failed: " .. tostring(err.message), vim.log.levels.ERROR)
      return
    end
    event("QuillModelPulled", { result = result })
    M.switch(client, offer)
  end)
  if not dl.id then
    finish(dl)
    notify("could not ask the server to download " .. offer.model .. " (is it running?)", vim.log.levels.ERROR)
    return
  end
  notify(("downloading %s (%s); :QuillCancelDownload stops it"):format(offer.name or offer.model, offer.size or "?"))
end

--- :QuillCancelDownload ($/cancelRequest for the pull; the server keeps the partial file).
function M.cancel()
  local dl = M.download
  if not dl then
    notify("no download is running")
    return
  end
  dl.cancelled = true
  local client = vim.lsp.get_client_by_id(dl.client_id)
  if client and dl.id then
    call(client, "cancel_request", dl.id)
  end
  finish(dl)
  event("QuillModelPulled", { cancelled = true })
  notify("download cancelled; :QuillRecommend resumes it", vim.log.levels.WARN)
end

--- For the statusline: "downloading 42%" while a download runs.
function M.progress_text()
  local dl = M.download
  if not dl then
    return nil
  end
  return dl.percentage and ("downloading %d%%"):format(dl.percentage) or "downloading"
end

-- -------------------------------------------------------------------------------------
-- The switch

local function offer_settings(offer)
  return type(offer.settings) == "table" and vim.deepcopy(offer.settings) or { model = offer.model }
end

--- Use the offer's settings now (didChangeConfiguration); once the server says the model is
--- ready, they are remembered for the next starts (see confirm_switch).
function M.switch(client, offer)
  local quill = require("quill")
  local settings = offer_settings(offer)
  local previous = {}
  for key in pairs(settings) do
    previous[key] = quill.options.settings[key] == nil and vim.NIL or quill.options.settings[key]
  end
  M.switching = { client_id = client.id, offer = offer, previous = previous }
  quill.apply_settings(settings)
end

--- The new model failed to load: back to the settings before the switch.
local function revert(sw)
  local quill = require("quill")
  for key, value in pairs(sw.previous or {}) do
    quill.options.settings[key] = value ~= vim.NIL and value or nil
  end
  notify(("could not switch to %s; back to %s"):format(sw.offer.name or sw.offer.model, tostring(quill.options.settings.model or "the default model")), vim.log.levels.WARN)
  quill.apply_settings({})
end

local function confirm_switch(client_id, sw)
  local client = vim.lsp.get_client_by_id(client_id)
  local settings = offer_settings(sw.offer)
  local name = sw.offer.name or sw.offer.model
  if not client then
    return
  end
  request(client, "quill/status", vim.empty_dict(), function(err, status)
    if err or type(status) ~= "table" then
      return
    end
    if status.model ~= settings.model then
      notify(("the server reports the model %s, not %s"):format(tostring(status.model), tostring(settings.model)), vim.log.levels.WARN)
      return
    end
    local state = M.read_state()
    state.model = { id = sw.offer.model, name = sw.offer.name, settings = settings }
    M.write_state(state)
    local quill = require("quill")
    if quill.user_model then
      notify(("now uses %s (until the next start: setup{} sets settings.model = %q)"):format(name, quill.user_model))
    else
      notify("now uses " .. name)
    end
    event("QuillModelSwitched", { model = settings.model, name = name })
  end)
end

--- quill/modelState from the server (init.lua's handler calls this).
function M.on_model_state(client_id, state)
  if not client_id then
    return
  end
  local sw = M.switching
  if sw and sw.client_id == client_id then
    if state == "loading" then
      sw.loading = true
    elseif state == "ready" and sw.loading then
      M.switching = nil
      confirm_switch(client_id, sw)
    elseif state == "error" then
      M.switching = nil
      revert(sw)
    end
  end
  if state == "ready" and not M.asked[client_id] then
    local client = vim.lsp.get_client_by_id(client_id)
    if client then
      M.ask(client, false)
    end
  end
end

--- The server of `client_id` exited: what was running for it is over.
function M.on_exit(client_id)
  local dl = M.download
  if dl and dl.client_id == client_id then
    finish(dl)
    if not dl.cancelled then
      notify("the server exited during the download; :QuillRecommend resumes it", vim.log.levels.WARN)
    end
  end
  if M.switching and M.switching.client_id == client_id then
    M.switching = nil
  end
  M.asked[client_id], M.answered[client_id] = nil, nil
end

return M
