--- "Explain with Quill": the server writes Markdown under its cache directory and sends
--- window/showDocument for it.  Show that file in a floating window (or a split) instead
--- of replacing the code in the current window.
local M = {}

local api = vim.api
local opts = { view = "float", width = 0.6, height = 0.7 }

function M.configure(o)
  opts = vim.tbl_extend("force", opts, o or {})
end

--- platformdirs' user_cache_dir("quill") (QUILL_CACHE_DIR wins), as the server computes it.
function M.cache_dirs()
  local dirs = {}
  local function add(d)
    if d and d ~= "" then
      table.insert(dirs, vim.fs.normalize(d))
    end
  end
  add(vim.env.QUILL_CACHE_DIR)
  if vim.env.XDG_CACHE_HOME and vim.env.XDG_CACHE_HOME ~= "" then
    add(vim.env.XDG_CACHE_HOME .. "/quill")
  end
  add(vim.fn.expand("~") .. "/.cache/quill")
  if vim.fn.has("mac") == 1 then
    add(vim.fn.expand("~") .. "/Library/Caches/quill")
  end
  if vim.env.LOCALAPPDATA then
    add(vim.env.LOCALAPPDATA .. "/quill/Cache")
  end
  return dirs
end

function M.is_quill_markdown(path)
  if not path:match("%.md$") and not path:match("%.markdown$") then
    return false
  end
  path = vim.fs.normalize(path)
  for _, dir in ipairs(M.cache_dirs()) do
    if path:sub(1, #dir + 1) == dir .. "/" then
      return true
    end
  end
  return false
end

local float_win

--- Show a Markdown file read-only in a float (q or <Esc> closes it) or a vertical split.
---@return integer win
function M.open(path)
  local lines = vim.fn.readfile(path)
  local buf = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].filetype = "markdown"
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  pcall(api.nvim_buf_set_name, buf, "quill://explain/" .. vim.fn.fnamemodify(path, ":t"))
  local win
  if opts.view == "split" then
    vim.cmd("vsplit")
    win = api.nvim_get_current_win()
    api.nvim_win_set_buf(win, buf)
  else
    if float_win and api.nvim_win_is_valid(float_win) then
      api.nvim_win_close(float_win, true)
    end
    local width = math.max(40, math.floor(vim.o.columns * opts.width))
    local height = math.max(5, math.min(#lines + 2, math.floor(vim.o.lines * opts.height)))
    win = api.nvim_open_win(buf, true, {
      relative = "editor",
      width = math.min(width, vim.o.columns - 4),
      height = math.min(height, vim.o.lines - 4),
      row = math.floor((vim.o.lines - height) / 2) - 1,
      col = math.floor((vim.o.columns - width) / 2),
      style = "minimal",
      border = "rounded",
      title = " Quill: explanation ",
      title_pos = "center",
    })
    float_win = win
    for _, key in ipairs({ "q", "<Esc>" }) do
      vim.keymap.set("n", key, function()
        if api.nvim_win_is_valid(win) then
          api.nvim_win_close(win, true)
        end
      end, { buffer = buf, nowait = true, desc = "Close the Quill explanation" })
    end
  end
  vim.wo[win].wrap = true
  vim.wo[win].linebreak = true
  vim.wo[win].conceallevel = 2
  api.nvim_exec_autocmds("User", { pattern = "QuillExplain", modeline = false, data = { path = path, win = win, buf = buf } })
  return win
end

--- Handler for window/showDocument: Quill's Markdown goes to the float/split, anything
--- else to Neovim's own handler.
function M.show_document(err, result, ctx, config)
  local uri = result and result.uri
  if uri and uri:match("^file:") and not result.external then
    local path = vim.uri_to_fname(uri)
    if M.is_quill_markdown(path) and vim.fn.filereadable(path) == 1 then
      local ok, e = pcall(M.open, path)
      if ok then
        return { success = true }
      end
      vim.notify("Quill: could not show the explanation: " .. tostring(e), vim.log.levels.WARN)
    end
  end
  return vim.lsp.handlers["window/showDocument"](err, result, ctx, config)
end

return M
