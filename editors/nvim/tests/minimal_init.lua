-- Neovim with this plugin only:  nvim --clean -u editors/nvim/tests/minimal_init.lua file.py
-- $EYAS_CMD names the `eyas` executable to run (default: the plugin's own lookup), $EYAS_SETTINGS
-- the server settings (JSON).
local plugin = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h")
vim.opt.runtimepath:prepend(plugin)
vim.opt.swapfile = false
vim.opt.shadafile = "NONE"

local opts = {
  debounce_ms = tonumber(vim.env.EYAS_DEBOUNCE_MS) or 150,
  accept_word_key = "<M-Right>",
  accept_line_key = "<M-Down>",
}
if vim.env.EYAS_SETTINGS then -- JSON: the server's settings
  opts.settings = vim.json.decode(vim.env.EYAS_SETTINGS)
end
if vim.env.EYAS_CMD then
  opts.cmd = { vim.env.EYAS_CMD, "serve" }
end
if vim.env.EYAS_BUILTIN == "0" then
  opts.builtin = false -- 0.12+: test our own ghost text instead of Neovim's
end
require("eyas").setup(opts)
