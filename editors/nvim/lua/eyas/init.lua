-- Eyas for Neovim: registers the `eyas serve` language server and shows its inline completions
-- as ghost text (Neovim's own `vim.lsp.inline_completion` on 0.12+, `eyas.inline` before).
local compat = require("eyas.compat")

local api = vim.api

local M = {}

M.defaults = {
  cmd = nil, -- nil: <dir>/.venv/bin/eyas for the current directory or a parent, else `eyas` on PATH
  -- the languages the server parses; any other filetype works too, with plainer context
  filetypes = { "python", "javascript", "javascriptreact", "typescript", "typescriptreact",
    "go", "rust", "java", "c", "cpp", "cuda" },
  root_markers = { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml", "pom.xml" },
  settings = {}, -- the server's settings (engine, model, maxTokens, enable, multiline, ...)
  debounce_ms = 150, -- the pause in typing before asking (0.10/0.11; 0.12 has its own)
  accept_key = "<Tab>", -- false: no mapping (call require("eyas").accept() yourself)
  accept_word_key = false, -- e.g. "<M-Right>": take the next word of the suggestion
  accept_line_key = false, -- e.g. "<M-Down>": take its next line
  enabled = true, -- ghost text on at start (:EyasToggle flips it)
  builtin = nil, -- nil: Neovim's inline completion where it exists (0.12+); false: always ours
}

M.options = nil

local function use_builtin(opts)
  local has = vim.lsp.inline_completion ~= nil
  if opts.builtin == nil then
    return has
  end
  return opts.builtin and has
end

--- `.venv/bin/eyas` of the workspace (the current directory or a parent), else `eyas` on PATH.
function M.default_cmd()
  local dir = vim.fn.getcwd()
  while dir and dir ~= "" do
    local candidate = dir .. "/.venv/bin/eyas"
    if vim.fn.executable(candidate) == 1 then
      return { candidate, "serve" }
    end
    local parent = vim.fs.dirname(dir)
    if parent == dir then
      break
    end
    dir = parent
  end
  return { "eyas", "serve" }
end

-- A Lua table that is empty would go out as a JSON array, which the server refuses as settings.
local function nonempty(t)
  return (type(t) == "table" and next(t) ~= nil) and t or nil
end

local function client_config(opts)
  local settings = nonempty(opts.settings)
  -- Declaring inlineCompletion tells the server we show ghost text, so it answers plain
  -- textDocument/completion with nothing instead of running the model a second time.
  local capabilities = vim.tbl_deep_extend("force", vim.lsp.protocol.make_client_capabilities(), {
    textDocument = { inlineCompletion = { dynamicRegistration = false } },
  })
  return {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = settings,
    settings = settings and { eyas = settings } or nil,
    capabilities = capabilities,
  }
end

--- The eyas clients: of `bufnr` when given, else all of them.
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = "eyas", bufnr = bufnr })
end

local function attach(bufnr, client)
  if use_builtin(M.options) then
    vim.lsp.inline_completion.enable(M.options.enabled, { bufnr = bufnr })
  else
    require("eyas.inline").attach(bufnr, client.id)
  end
end

--- Accepts the suggestion shown in the current buffer; false when there is none.
---@param kind? "all"|"word"|"line"
function M.accept(kind)
  if use_builtin(M.options or M.defaults) then
    return vim.lsp.inline_completion.get() -- 0.12 takes whole suggestions only
  end
  return require("eyas.inline").accept(kind)
end

local function map_accept(key, kind)
  if not key or (kind ~= "all" and use_builtin(M.options)) then
    return -- 0.12's inline completion takes whole suggestions only
  end
  vim.keymap.set("i", key, function()
    if use_builtin(M.options) then
      -- get() applies the item from a scheduled callback, so returning "" is enough here
      return vim.lsp.inline_completion.get() and "" or key
    end
    return require("eyas.inline").accept_keys(kind, key)
  end, { expr = true, silent = true, desc = "Eyas: accept the suggestion (" .. kind .. ")" })
end

--- Flips (or sets) whether suggestions show.
function M.toggle(on)
  if on == nil then
    on = not M.options.enabled
  end
  M.options.enabled = on
  if use_builtin(M.options) then
    vim.lsp.inline_completion.enable(on)
  else
    require("eyas.inline").set_enabled(on)
  end
  return on
end

--- Sends new server settings to the running servers (workspace/didChangeConfiguration).
function M.update_settings(settings)
  M.options.settings = vim.tbl_deep_extend("force", M.options.settings or {}, settings)
  for _, client in ipairs(M.clients()) do
    compat.notify(client, "workspace/didChangeConfiguration", { settings = { eyas = M.options.settings } })
  end
end

--- Calls `callback(err, status)` with the server's eyas/status answer.
function M.status(callback, bufnr)
  local client = M.clients(bufnr or api.nvim_get_current_buf())[1] or M.clients()[1]
  if not client then
    return callback("no eyas server is running", nil)
  end
  compat.request(client, "eyas/status", vim.empty_dict(), function(err, result)
    callback(err and (err.message or vim.inspect(err)) or nil, result)
  end)
end

local function show_status()
  M.status(function(err, st)
    if err then
      return vim.notify("Eyas: " .. err, vim.log.levels.WARN)
    end
    local latency = (st.latency_ms or {}).p50_total
    local summary = ("Eyas %s (%s, %s): served %d, shown %d, accepted %d (%d chars), p50 %s ms, ghost text %s"):format(
      st.state, st.engine, tostring(st.model), st.served or 0, st.shown or 0, st.accepted or 0,
      st.accepted_chars or 0, latency and ("%.0f"):format(latency) or "-", M.options.enabled and "on" or "off")
    vim.notify(summary .. "\n" .. vim.json.encode(st), vim.log.levels.INFO)
  end)
end

local function register_server(opts)
  local config = client_config(opts)
  if vim.lsp.config then -- 0.11+: the config is merged with any user `lsp/eyas.lua`
    vim.lsp.config("eyas", config)
    vim.lsp.enable("eyas")
    return
  end
  -- 0.10: one client per root, started from FileType (and for the buffers already open)
  local function start(bufnr)
    if vim.bo[bufnr].buftype ~= "" then
      return
    end
    local root = vim.fs.root(bufnr, opts.root_markers) or vim.fn.getcwd()
    vim.lsp.start(vim.tbl_extend("force", config, { name = "eyas", root_dir = root }), { bufnr = bufnr })
  end
  local group = api.nvim_create_augroup("eyas.start", { clear = true })
  api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = opts.filetypes or "*",
    callback = function(ev)
      start(ev.buf)
    end,
  })
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    local ft = vim.bo[bufnr].filetype
    if api.nvim_buf_is_loaded(bufnr) and ft ~= "" and (not opts.filetypes or vim.tbl_contains(opts.filetypes, ft)) then
      start(bufnr)
    end
  end
end

function M.setup(opts)
  opts = vim.tbl_deep_extend("force", M.defaults, opts or {})
  opts.cmd = opts.cmd or M.default_cmd()
  M.options = opts
  if not use_builtin(opts) then
    local inline = require("eyas.inline")
    inline.debounce_ms, inline.enabled = opts.debounce_ms, opts.enabled
  end

  local group = api.nvim_create_augroup("eyas", { clear = true })
  local function highlight()
    api.nvim_set_hl(0, "EyasGhostText", { link = "Comment", default = true })
  end
  highlight()
  api.nvim_create_autocmd("ColorScheme", { group = group, callback = highlight }) -- :hi clear drops it
  api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == "eyas" then
        attach(ev.buf, client)
      end
    end,
  })
  api.nvim_create_autocmd("LspDetach", {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == "eyas" and not use_builtin(opts) then
        require("eyas.inline").detach(ev.buf)
      end
    end,
  })

  -- Yanked code is likely to be pasted nearby: the server keeps it as context (eyas/yank).
  api.nvim_create_autocmd("TextYankPost", {
    group = group,
    callback = function(ev)
      local event = vim.v.event
      local client = event.operator == "y" and M.clients(ev.buf)[1]
      local text = client and table.concat(event.regcontents, "\n")
      if text and text:find("%S") and #text <= 20000 then
        compat.notify(client, "eyas/yank", { uri = vim.uri_from_bufnr(ev.buf), text = text })
      end
    end,
  })

  map_accept(opts.accept_key, "all")
  map_accept(opts.accept_word_key, "word")
  map_accept(opts.accept_line_key, "line")
  api.nvim_create_user_command("EyasToggle", function()
    vim.notify("Eyas: ghost text " .. (M.toggle() and "on" or "off"))
  end, { desc = "Eyas: turn ghost text on or off" })
  api.nvim_create_user_command("EyasStatus", show_status, { desc = "Eyas: the server's status and counters" })

  register_server(opts)
end

return M
