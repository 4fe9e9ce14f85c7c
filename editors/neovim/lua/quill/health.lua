--- :checkhealth quill
local M = {}

function M.check()
  local health = vim.health
  local quill = require("quill")
  local ghost = require("quill.ghost")

  health.start("quill: Neovim")
  local v = vim.version()
  local version = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
  if vim.fn.has("nvim-0.10") == 0 then
    health.error("Neovim " .. version .. " is too old: Quill needs 0.10 or newer (inline extmarks)")
  elseif quill.native() then
    health.ok("Neovim " .. version .. ": ghost text by vim.lsp.inline_completion (native)")
  else
    health.ok("Neovim " .. version .. ": ghost text by Quill's extmarks")
  end
  if not quill.setup_done then
    health.warn('require("quill").setup{} has not been called', { "Call it in your init.lua, or use the lazy.nvim spec in the README" })
  end
  for _, p in ipairs(quill.problems) do
    health.warn("setup: " .. p)
  end

  health.start("quill: server")
  local cmd, tried = quill.find_server(vim.api.nvim_get_current_buf())
  if not cmd then
    health.error("quill-lsp not found; looked at:\n" .. table.concat(tried, "\n"), {
      "Install the server (make install in the Quill repository, or pip install it in a virtualenv)",
      'or set cmd = { "/path/to/quill-lsp" } in require("quill").setup{}',
    })
  else
    health.ok("server: " .. table.concat(cmd, " "))
    local out = vim.fn.system({ cmd[1], "--version" })
    if vim.v.shell_error == 0 then
      health.ok("version: " .. vim.trim(out))
    else
      health.error("`" .. cmd[1] .. " --version` failed: " .. vim.trim(out))
    end
  end

  local settings = quill.server_settings()
  health.info("model setting: " .. tostring(settings.model or "(server default)"))
  local chosen = require("quill.offer").remembered()
  if chosen then
    local note = quill.user_model and (" (not used: setup{} sets model = " .. quill.user_model .. ")") or ""
    health.info(("model chosen from the offer: %s%s, in %s"):format(chosen.id or chosen.settings.model, note, require("quill.offer").state_path()))
  end
  local status, err = quill.status(3000)
  if status then
    local detail = status.detail and status.detail ~= "" and status.detail ~= vim.NIL and (" (" .. status.detail .. ")") or ""
    local line = ("running: quill-lsp %s, state %s%s"):format(status.version or "?", status.state or "?", detail)
    if status.state == "error" then
      health.error(line .. ": " .. tostring(status.error))
    elseif status.state == "ready" then
      health.ok(line)
    else
      health.warn(line)
    end
    local model = status.description ~= vim.NIL and status.description or status.model
    health.info(("model: %s, backend: %s, device: %s"):format(tostring(model), tostring(status.backend), tostring(status.device)))
  else
    health.info(err)
  end

  health.start("quill: keys")
  local k = quill.options.keymaps
  for _, name in ipairs({ "accept", "accept_word", "accept_line", "dismiss" }) do
    local key = k[name]
    if key and quill.setup_done and not (name ~= "accept" and name ~= "dismiss" and quill.native()) then
      local m = vim.fn.maparg(key, "i", false, true)
      if type(m) == "table" and (m.desc or ""):match("^Quill") then
        health.ok(("%s: %s"):format(name, key))
      elseif type(m) == "table" and not vim.tbl_isempty(m) then
        health.warn(("%s: %s was mapped again after setup{} (%s)"):format(name, key, m.desc or m.rhs or "a Lua function"), {
          "Set keymaps." .. name .. " to another key, or call require('quill').accept() from that mapping",
        })
      else
        health.warn(("%s: %s is not mapped"):format(name, key))
      end
    elseif key == false then
      health.info(name .. ": no key (keymaps." .. name .. " = false)")
    end
  end
  local last = ghost.stats.last
  if last then
    health.info(("last suggestion: %.0f ms from keystroke to ghost text (request %.0f ms)"):format(last.keystroke_to_ghost_ms, last.request_ms))
  end
end

return M
