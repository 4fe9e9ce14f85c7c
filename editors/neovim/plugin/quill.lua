-- :Quill {status|enable|disable|toggle|restart|stop|model [id]|log|suggest|recommend|cancel}
-- :QuillRecommend, :QuillCancelDownload (the model offer: lua/quill/offer.lua)
-- Nothing starts until require("quill").setup{} is called.
if vim.g.loaded_quill then
  return
end
vim.g.loaded_quill = true

vim.api.nvim_create_user_command("Quill", function(cmd)
  require("quill").command(cmd.args)
end, {
  nargs = "*",
  desc = "Quill: status, enable, disable, toggle, restart, stop, model, log, suggest, recommend, cancel",
  complete = function(arglead, line)
    if line:match("^%s*Quill%s+%S+%s") then
      return {}
    end
    return require("quill").complete_command(arglead)
  end,
})

vim.api.nvim_create_user_command("QuillRecommend", function()
  require("quill").recommend()
end, { desc = "Quill: offer the model that fits this machine best (download and switch)" })

vim.api.nvim_create_user_command("QuillCancelDownload", function()
  require("quill").cancel_download()
end, { desc = "Quill: stop the model download (a later download resumes it)" })
