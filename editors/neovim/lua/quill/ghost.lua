--- Ghost text for Neovim 0.10/0.11 (0.12 has vim.lsp.inline_completion; see init.lua).
---
--- On TextChangedI/CursorMovedI, after `debounce_ms`, ask the server for
--- textDocument/inlineCompletion at the cursor; an older request still running is
--- cancelled with $/cancelRequest.  The answer is drawn with one extmark: the first line
--- as inline virtual text at the cursor, the rest as virtual lines below.  Typing the
--- start of a shown suggestion keeps the rest on screen without a new request.
local M = {}

local api = vim.api
local uv = vim.uv or vim.loop
local ns = api.nvim_create_namespace("quill.ghost")
M.ns = ns

local METHOD = "textDocument/inlineCompletion"
local REQUEST_CANCELLED = -32800
local CONTENT_MODIFIED = -32801
local has_011 = vim.fn.has("nvim-0.11") == 1

---@class quill.Suggestion
---@field text string   what accepting would insert at (row, col)
---@field row integer   0-based
---@field col integer   0-based byte column
---@field tick integer  b:changedtick when drawn

---@class quill.BufState
---@field timer? uv.uv_timer_t
---@field req? { client: vim.lsp.Client, id: integer, row: integer, col: integer, tick: integer, t0: integer, key_ns: integer }
---@field pending? string   cursor/tick key of the scheduled request
---@field sugg? quill.Suggestion
---@field extmark? integer
---@field key_ns? integer   hrtime of the last keystroke seen (TextChangedI/CursorMovedI)
---@field refresh? boolean  the request in flight answers a quill/refreshInlineCompletion

---@type table<integer, quill.BufState>
local buffers = {}

local opts = { debounce_ms = 60, hl_group = "QuillGhostText", enabled = function() return true end }

--- Timings of the last suggestion shown (for :Quill status, the tests and benchmarks).
M.stats = { requests = 0, cancelled = 0, shown = 0, refreshed = 0, last = nil }

---@param o table
function M.configure(o)
  opts = vim.tbl_extend("force", opts, o)
end

local function call(client, method, ...)
  -- 0.11 made client functions methods (client:request); 0.10 has plain fields.
  if has_011 then
    return client[method](client, ...)
  end
  return client[method](...)
end
M.call = call

local function state(bufnr)
  local st = buffers[bufnr]
  if not st then
    st = {}
    buffers[bufnr] = st
  end
  return st
end

local function get_client(bufnr)
  local get = vim.lsp.get_clients or vim.lsp.get_active_clients
  for _, client in ipairs(get({ bufnr = bufnr, name = "quill" })) do
    return client
  end
end

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function expand_tabs(s)
  if not s:find("\t", 1, true) then
    return s
  end
  return (s:gsub("\t", string.rep(" ", vim.bo.tabstop > 0 and vim.bo.tabstop or 8)))
end

--- Cancel the request in flight for `bufnr` (sends $/cancelRequest).
function M.cancel(bufnr)
  local st = buffers[bufnr]
  if st and st.req then
    local req = st.req
    st.req = nil
    st.refresh = nil
    M.stats.cancelled = M.stats.cancelled + 1
    pcall(call, req.client, "cancel_request", req.id)
  end
end

--- Hide the suggestion of `bufnr` (default: current buffer).
function M.clear(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = buffers[bufnr]
  if not st then
    return
  end
  st.sugg = nil
  if st.extmark then
    pcall(api.nvim_buf_del_extmark, bufnr, ns, st.extmark)
    st.extmark = nil
  end
end

--- Hide the suggestion and stop anything scheduled or running.
function M.reset(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = buffers[bufnr]
  if not st then
    return
  end
  if st.timer then
    st.timer:stop()
  end
  st.pending = nil
  M.cancel(bufnr)
  M.clear(bufnr)
end

---@param bufnr integer
---@param s quill.Suggestion
local function render(bufnr, s)
  local st = state(bufnr)
  local lines = vim.split(s.text, "\n", { plain = true })
  local first = table.remove(lines, 1)
  local mark = { id = st.extmark, hl_mode = "combine", priority = 200 }
  if first ~= "" then
    mark.virt_text = { { expand_tabs(first), opts.hl_group } }
    mark.virt_text_pos = "inline"
  end
  if #lines > 0 then
    mark.virt_lines = {}
    for _, line in ipairs(lines) do
      table.insert(mark.virt_lines, { { expand_tabs(line), opts.hl_group } })
    end
  end
  if not mark.virt_text and not mark.virt_lines then
    M.clear(bufnr)
    return
  end
  local ok, id = pcall(api.nvim_buf_set_extmark, bufnr, ns, s.row, s.col, mark)
  if ok then
    st.extmark = id
    st.sugg = s
  else
    st.extmark = nil
    st.sugg = nil
  end
end

--- The suggestion shown in `bufnr` (default: current buffer), or nil.
---@return quill.Suggestion|nil
function M.get(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = buffers[bufnr]
  return st and st.extmark and st.sugg or nil
end

function M.visible(bufnr)
  return M.get(bufnr) ~= nil
end

--- True while a request is in flight (the statusline's "generating").
function M.busy()
  for _, st in pairs(buffers) do
    if st.req then
      return true
    end
  end
  return false
end

--- The text of one inline completion item at (row, col), or nil.
local function item_text(bufnr, client, item, row, col)
  local text = item.insertText
  if type(text) == "table" then
    text = text.value -- a StringValue snippet: shown and inserted as plain text
  end
  if type(text) ~= "string" or text == "" then
    return nil
  end
  if item.range then
    -- The range may start before the cursor (the server repeats what is typed): drop
    -- that part, as long as it matches the buffer.
    local start = item.range.start
    if start.line == row then
      local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
      local ok, start_col = pcall(vim.lsp.util._get_line_byte_from_position, bufnr, start, client.offset_encoding)
      if ok and start_col < col then
        local typed = line:sub(start_col + 1, col)
        if text:sub(1, #typed) ~= typed then
          return nil
        end
        text = text:sub(#typed + 1)
      end
    end
  end
  return text ~= "" and text or nil
end

local function fire(pattern, data)
  api.nvim_exec_autocmds("User", { pattern = pattern, modeline = false, data = data })
end

local function request(bufnr)
  local st = state(bufnr)
  st.pending = nil
  if not opts.enabled() or api.nvim_get_current_buf() ~= bufnr or not vim.fn.mode():match("^i") then
    return
  end
  if vim.fn.pumvisible() == 1 then
    return
  end
  local client = get_client(bufnr)
  if not client then
    return
  end
  M.cancel(bufnr) -- latest wins: the older request is stale
  local row, col = cursor()
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local t0 = uv.hrtime()
  local key_ns = st.key_ns or t0
  local ok, id
  ok, id = call(client, "request", METHOD, params, function(err, result)
    if not st.req or st.req.id ~= id then
      return -- cancelled or superseded
    end
    st.req = nil
    local refreshing = st.refresh
    st.refresh = nil
    if err then
      if err.code ~= REQUEST_CANCELLED and err.code ~= CONTENT_MODIFIED then
        vim.lsp.log.warn("quill: inlineCompletion failed", err)
      end
      return
    end
    if api.nvim_get_current_buf() ~= bufnr or not vim.fn.mode():match("^i") then
      return
    end
    local r, c = cursor()
    if r ~= row or c ~= col or api.nvim_buf_get_changedtick(bufnr) ~= tick then
      return -- the text moved on while the model was generating
    end
    local items = result and (result.items or result) or {}
    if refreshing then
      M.stats.refreshed = M.stats.refreshed + 1
      M.clear(bufnr) -- a refresh replaces what is shown, with nothing if that is the answer
    end
    for _, item in ipairs(items) do
      local text = item_text(bufnr, client, item, row, col)
      if text then
        render(bufnr, { text = text, row = row, col = col, tick = tick })
        local now = uv.hrtime()
        M.stats.shown = M.stats.shown + 1
        M.stats.last = {
          keystroke_to_ghost_ms = (now - key_ns) / 1e6,
          request_ms = (now - t0) / 1e6,
          debounce_ms = opts.debounce_ms,
          chars = #text,
        }
        fire("QuillSuggestion", { bufnr = bufnr, text = text })
        return
      end
    end
  end, bufnr)
  if ok then
    M.stats.requests = M.stats.requests + 1
    st.req = { client = client, id = id, row = row, col = col, tick = tick, t0 = t0, key_ns = key_ns }
  end
end

--- Typing the start of the shown suggestion: keep the rest on screen.
---@return boolean kept
local function type_through(bufnr, st, row, col, tick)
  local s = st.sugg
  if not s or row ~= s.row or col <= s.col then
    return false
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local typed = line:sub(s.col + 1, col)
  if typed == "" or typed:find("\n", 1, true) or s.text:sub(1, #typed) ~= typed or #typed >= #s.text then
    return false
  end
  render(bufnr, { text = s.text:sub(#typed + 1), row = row, col = col, tick = tick })
  return st.sugg ~= nil
end

--- TextChangedI / CursorMovedI.
function M.on_change(bufnr)
  local st = state(bufnr)
  local row, col = cursor()
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local s = st.sugg
  if s and s.row == row and s.col == col and s.tick == tick then
    return -- nothing moved since the suggestion was drawn (e.g. our own accept)
  end
  local key = row .. ":" .. col .. ":" .. tick
  if st.pending == key then
    return -- CursorMovedI and TextChangedI for the same keystroke
  end
  st.key_ns = uv.hrtime()
  if s and type_through(bufnr, st, row, col, tick) then
    return
  end
  M.clear(bufnr)
  M.cancel(bufnr)
  if not opts.enabled() then
    return
  end
  st.pending = key
  st.timer = st.timer or uv.new_timer()
  st.timer:stop()
  st.timer:start(opts.debounce_ms, 0, vim.schedule_wrap(function()
    if st.pending == key and api.nvim_buf_is_valid(bufnr) then
      request(bufnr)
    end
  end))
end

--- Ask now, without waiting for a keystroke (`:Quill suggest`).
function M.suggest(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  state(bufnr).key_ns = uv.hrtime()
  request(bufnr)
end

--- `quill/refreshInlineCompletion`: the server has a better suggestion where the cursor was
--- (the full prompt's, where a quick prompt's was shown or hidden right after opening).
--- Ask again when the cursor is still there, in insert mode, with nothing scheduled.
---@param params { textDocument: { uri: string }, position: { line: integer, character: integer } }
function M.refresh(client, params)
  if type(params) ~= "table" or type(params.textDocument) ~= "table" or type(params.position) ~= "table" then
    return
  end
  local bufnr = api.nvim_get_current_buf()
  if vim.uri_from_bufnr(bufnr) ~= params.textDocument.uri or not vim.fn.mode():match("^i") then
    return
  end
  local st = state(bufnr)
  if st.pending or st.req then
    return -- the user typed on: that request answers
  end
  local pos = vim.lsp.util.make_position_params(0, client.offset_encoding or "utf-16").position
  if pos.line ~= params.position.line or pos.character ~= params.position.character then
    return
  end
  st.key_ns = uv.hrtime()
  request(bufnr)
  if st.req then
    st.refresh = true
  end
end

local function next_word(text)
  if text:sub(1, 1) == "\n" then
    return text:match("^\n[ \t]*")
  end
  return text:match("^[ \t]*[%w_]+") or text:match("^[ \t]*[^%w_%s]+") or text:match("^[ \t]+") or text:sub(1, 1)
end

local function next_line(text)
  if text:sub(1, 1) == "\n" then
    return text:match("^\n[^\n]*")
  end
  return text:match("^[^\n]+")
end

--- Insert the suggestion (all of it, its next word, or the rest of its line).
---@param what? "all"|"word"|"line"
---@return boolean accepted
function M.accept(what)
  local bufnr = api.nvim_get_current_buf()
  local s = M.get(bufnr)
  if not s then
    return false
  end
  local row, col = cursor()
  if row ~= s.row or col ~= s.col then
    M.clear(bufnr)
    return false
  end
  local part = s.text
  if what == "word" then
    part = next_word(s.text)
  elseif what == "line" then
    part = next_line(s.text)
  end
  local lines = vim.split(part, "\n", { plain = true })
  local st = state(bufnr)
  M.clear(bufnr)
  api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
  local new_row = row + #lines - 1
  local new_col = #lines == 1 and col + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { new_row + 1, new_col })
  local rest = s.text:sub(#part + 1)
  if rest ~= "" then
    render(bufnr, { text = rest, row = new_row, col = new_col, tick = api.nvim_buf_get_changedtick(bufnr) })
  end
  st.pending = nil
  fire("QuillAccept", { bufnr = bufnr, text = part, rest = rest })
  return true
end

--- Forget a buffer (BufWipeout).
function M.detach(bufnr)
  M.reset(bufnr)
  local st = buffers[bufnr]
  if st and st.timer then
    st.timer:close()
  end
  buffers[bufnr] = nil
end

return M
