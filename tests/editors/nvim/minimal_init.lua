-- Minimal init for the Neovim tests: only Quill on the runtimepath, nothing from the user.
local root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h:h")
vim.opt.runtimepath:prepend(root .. "/editors/neovim")
vim.opt.swapfile = false
vim.opt.shadafile = "NONE"
vim.cmd.runtime("plugin/quill.lua")
vim.g.quill_repo_root = root
