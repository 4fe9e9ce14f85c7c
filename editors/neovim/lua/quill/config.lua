--- Quill for Neovim: options, their defaults and their checks.
local M = {}

---@class quill.Keymaps
---@field accept string|false       insert-mode key that accepts the whole suggestion (only when one is shown)
---@field accept_word string|false  accepts the next word of the suggestion
---@field accept_line string|false  accepts the rest of the suggestion's current line
---@field dismiss string|false      hides the suggestion

---@class quill.Options
M.defaults = {
  --- Command that starts the server; nil: `quill-lsp` from the project's .venv/venv, PATH or ~/.local/bin.
  cmd = nil, ---@type string[]|nil
  --- Filetypes to attach to; { "*" } attaches to every buffer that has a filetype.
  filetypes = {
    "python", "lua", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust",
    "c", "cpp", "java", "kotlin", "ruby", "php", "sh", "bash", "zsh", "html", "css", "scss",
    "json", "yaml", "toml", "markdown", "sql", "swift", "scala", "haskell", "elixir", "zig", "vim",
  },
  --- Files that mark a project root (the workspace the server indexes).
  root_markers = { ".git", "pyproject.toml", "setup.py", "package.json", "Cargo.toml", "go.mod", "Makefile" },
  --- Server settings, camelCase as in the server (model, backend, endpoint, gpuLayers,
  --- contextTokens, maxTokens, temperature, debounceMs, workspaceContext, enabled,
  --- cacheCompletions, requestTimeoutS, threads, apiKeyEnv, secretPaths (a list of globs),
  --- indexMaxFiles, latencyTargetMs, kvCacheMb, warmup, workspaceWarmTokens, validityGate, multiline, candidates, minConfidence,
  --- quickMinConfidence, unsureAlternatives, modelOffer).  Unset keys keep the server's defaults.
  --- A model chosen from the first-run offer (:QuillRecommend) is remembered in
  --- stdpath("data")/quill/state.json and used when `model` is not set here.
  settings = {},
  --- Milliseconds to wait after the last keystroke before asking for a suggestion.
  debounce_ms = 60,
  --- Ghost text: "auto" uses Neovim 0.12's vim.lsp.inline_completion when present and
  --- Quill's own extmark rendering otherwise; true/false force one or the other.
  native = "auto",
  keymaps = {
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-C-Right>",
    dismiss = "<C-]>",
  },
  --- Highlight group of the ghost text (QuillGhostText links to Comment by default).
  hl_group = "QuillGhostText",
  --- "Explain with Quill" results: "float" (a floating window) or "split" (a vertical split).
  explain = { view = "float", width = 0.6, height = 0.7 },
  --- Keep the server's textDocument/completion items (for nvim-cmp/blink users who want them
  --- in the menu as well).  Off by default: ghost text shows the same suggestion, and two
  --- requests per keystroke would cancel each other on the server (latest wins).
  completion_menu = false,
  --- Restart a crashed server with backoff (1 s, 2 s, 4 s, ... up to 30 s; at most 5 times in a row).
  restart_on_crash = true,
  --- Log level of the server.  Its stderr goes to the LSP log (:lua vim.cmd.edit(vim.lsp.get_log_path())),
  --- so the default keeps it to warnings and errors.
  log_level = "warning",
}

local SERVER_KEYS = {
  model = "string", backend = "string", endpoint = "string", apiKeyEnv = "string",
  gpuLayers = "number", contextTokens = "number", maxTokens = "number", temperature = "number",
  debounceMs = "number", workspaceContext = "boolean", requestTimeoutS = "number", threads = "number",
  enabled = "boolean", cacheCompletions = "boolean", secretPaths = "table", indexMaxFiles = "number",
  latencyTargetMs = "number", kvCacheMb = "number", warmup = "boolean", workspaceWarmTokens = "number",
  validityGate = "boolean", multiline = "boolean", candidates = "number", minConfidence = "number",
  quickMinConfidence = "number", unsureAlternatives = "boolean", modelOffer = "boolean",
}
M.SERVER_KEYS = SERVER_KEYS

---@type table
M.options = vim.deepcopy(M.defaults)

--- Merge user options over the defaults; report (once, clearly) what is wrong and keep the default.
---@param opts table|nil
---@return table options, string[] problems
function M.resolve(opts)
  local problems = {}
  opts = opts or {}
  local out = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace, they do not merge by index.
  for _, key in ipairs({ "filetypes", "root_markers", "cmd" }) do
    if opts[key] ~= nil then
      out[key] = opts[key]
    end
  end
  if out.cmd ~= nil and type(out.cmd) == "string" then
    out.cmd = { out.cmd }
  end
  if out.cmd ~= nil and (type(out.cmd) ~= "table" or type(out.cmd[1]) ~= "string") then
    table.insert(problems, "cmd must be a list of strings, e.g. { '/path/to/quill-lsp' }")
    out.cmd = nil
  end
  if type(out.debounce_ms) ~= "number" or out.debounce_ms < 0 then
    table.insert(problems, "debounce_ms must be a number >= 0")
    out.debounce_ms = M.defaults.debounce_ms
  end
  if out.explain.view ~= "float" and out.explain.view ~= "split" then
    table.insert(problems, "explain.view must be 'float' or 'split'")
    out.explain.view = "float"
  end
  for key, value in pairs(out.settings) do
    local want = SERVER_KEYS[key]
    if not want then
      table.insert(problems, ("settings.%s is not a Quill server setting (ignored)"):format(key))
      out.settings[key] = nil
    elseif type(value) ~= want and value ~= vim.NIL then
      table.insert(problems, ("settings.%s must be a %s"):format(key, want))
      out.settings[key] = nil
    end
  end
  return out, problems
end

return M
