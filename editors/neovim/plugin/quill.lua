-- :Quill {status|enable|disable|toggle|restart|stop|model [id]|log|suggest}
-- Nothing starts until require("quill").setup{} is called.
if vim.g.loaded_quill then
  return
end
vim.g.loaded_quill = true

vim.api.nvim_create_user_command("Quill", function(cmd)
  require("quill").command(cmd.args)
end, {
  nargs = "*",
  desc = "Quill: status, enable, disable, toggle, restart, stop, model, log, suggest",
  complete = function(arglead, line)
    if line:match("^%s*Quill%s+%S+%s") then
      return {}
    end
    return require("quill").complete_command(arglead)
  end,
})
