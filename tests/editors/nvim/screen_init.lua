-- Set-up for the TUI screen test (test_neovim.py::test_neovim_tui_screen): Quill on the
-- sample file; tells the driver (through files) when the model is ready and when a
-- suggestion is drawn.  The driver types through the terminal like a user.
local quill = require("quill")
local out = assert(os.getenv("QUILL_TEST_SIGNAL_DIR"))
local server = os.getenv("QUILL_LSP") or (vim.g.quill_repo_root .. "/.venv/bin/quill-lsp")

local function signal(name, data)
  vim.fn.writefile({ vim.json.encode(data or {}) }, out .. "/" .. name)
end

vim.api.nvim_create_autocmd("User", {
  pattern = "QuillModelState",
  callback = function(ev)
    if ev.data.state == "ready" then
      signal("ready", ev.data)
    end
  end,
})
vim.api.nvim_create_autocmd("User", {
  pattern = "QuillSuggestion",
  callback = function(ev)
    signal("suggestion", { text = ev.data.text, stats = require("quill.ghost").stats.last })
  end,
})
vim.o.laststatus = 2
vim.o.statusline = "%f %= %{v:lua.require'quill'.statusline()} "
vim.o.number = true
quill.setup({
  cmd = { server, "--log-level", "warning" },
  -- No confidence bar: the screen test checks how a suggestion is drawn (tests/lsp test the bar).
  -- No model offer either: its choice would cover the screen (offer_spec.lua tests it).
  settings = { threads = tonumber(os.getenv("QUILL_TEST_THREADS") or "1"), minConfidence = 0, modelOffer = false },
})
