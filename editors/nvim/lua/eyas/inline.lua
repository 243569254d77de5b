-- Ghost text for Neovim 0.10/0.11, which have no `vim.lsp.inline_completion` (0.12 does, and
-- `eyas.setup` uses it there). One suggestion per buffer, drawn with an extmark:
--   edit or move in insert mode -> debounce -> textDocument/inlineCompletion -> extmark
-- Any edit, cursor move or leaving insert mode clears it and cancels the request in flight,
-- and an answer for an older document version or cursor position is dropped.
local compat = require("eyas.compat")

local api = vim.api
local uv = vim.uv or vim.loop

local M = {}

M.ns = api.nvim_create_namespace("eyas.ghost")
M.debounce_ms = 150
M.enabled = true

local AUTOMATIC = 2 -- InlineCompletionTriggerKind.Automatic

---@class eyas.Suggestion
---@field text string      what accepting inserts (the item's insertText)
---@field row integer      0-based range the text replaces (zero width at the cursor here)
---@field col integer
---@field end_row integer
---@field end_col integer
---@field ghost string     what is drawn at the cursor: `text` less what is typed already
---@field cursor integer[]  (1,0)-indexed cursor it was made for
---@field tick integer      b:changedtick it was made for
---@field command? table   the item's command: runs on the server when accepted
---@field extmark integer

---@class eyas.BufState
---@field client_id integer
---@field timer uv.uv_timer_t
---@field pending? table       token of the request in flight (a newer request replaces it)
---@field request_id? integer
---@field suggestion? eyas.Suggestion

---@type table<integer, eyas.BufState>
local states = {}

local function in_insert_mode()
  return api.nvim_get_mode().mode:sub(1, 1) == "i"
end

local function cancel_request(state)
  local client = vim.lsp.get_client_by_id(state.client_id)
  if client and state.request_id then
    pcall(compat.cancel, client, state.request_id)
  end
  state.pending, state.request_id = nil, nil
end

--- Clears the ghost text and forgets the suggestion; stops the timer and the request in flight.
function M.clear(bufnr)
  local state = states[bufnr]
  if not state then
    return
  end
  state.timer:stop()
  cancel_request(state)
  state.suggestion = nil
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

--- Leaving insert mode (Escape) over a suggestion waves it away: the server counts that too.
function M.dismiss(bufnr)
  local state = states[bufnr]
  local client = state and state.suggestion and vim.lsp.get_client_by_id(state.client_id)
  if client then
    compat.notify(client, "eyas/dismissed", { uri = vim.uri_from_bufnr(bufnr) })
  end
  M.clear(bufnr)
end

--- Whether a request is waiting for the debounce or for the server.
function M.busy(bufnr)
  local state = states[bufnr or api.nvim_get_current_buf()]
  return state ~= nil and (state.timer:is_active() or state.pending ~= nil)
end

--- The suggestion shown in `bufnr`, if any.
---@return eyas.Suggestion?
function M.current(bufnr)
  local state = states[bufnr or api.nvim_get_current_buf()]
  return state and state.suggestion
end

local function virt_chunks(line)
  -- virtual text draws a tab as one cell; spread it like the buffer would
  local spaces = string.rep(" ", vim.bo.tabstop)
  return { { (line:gsub("\t", spaces)), "EyasGhostText" } }
end

local function show(bufnr, state, s, client)
  local lines = vim.split(s.ghost, "\n", { plain = true })
  local rest = {}
  for i = 2, #lines do
    rest[#rest + 1] = virt_chunks(lines[i])
  end
  local opts = { virt_lines = #rest > 0 and rest or nil, hl_mode = "combine" }
  if lines[1] ~= "" then
    -- inline: the first line pushes the text after the cursor right, as it will when accepted
    opts.virt_text, opts.virt_text_pos = virt_chunks(lines[1]), "inline"
  end
  s.extmark = api.nvim_buf_set_extmark(bufnr, M.ns, s.cursor[1] - 1, s.cursor[2], opts)
  state.suggestion = s
  -- the server counts what it showed, for acceptance rates in eyas/status
  compat.notify(client, "eyas/shown", {
    uri = vim.uri_from_bufnr(bufnr),
    length = vim.fn.strchars(s.text),
  })
end

--- The first usable item of a response, as a suggestion at the cursor; nil if there is none.
local function to_suggestion(bufnr, result, client, cursor, tick)
  local items = result and (result.items or result) or {}
  local item = items[1]
  if type(item) ~= "table" then
    return nil
  end
  local text = item.insertText
  if type(text) == "table" then
    text = text.value -- a snippet: shown and inserted as its plain text
  end
  if type(text) ~= "string" then
    return nil
  end
  text = text:gsub("\r\n?", "\n")
  local row, col = cursor[1] - 1, cursor[2]
  local s = { row = row, col = col, end_row = row, end_col = col, tick = tick, cursor = cursor,
    command = item.command }
  local skip = 0
  local range = item.range
  if range then
    local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
    local enc = client.offset_encoding or "utf-16"
    local start, stop = range.start, range["end"]
    if start.line ~= row or stop.line ~= row then
      return nil -- only ranges on the cursor line can be drawn at the cursor
    end
    s.col, s.end_col = compat.byte_col(line, start.character, enc), compat.byte_col(line, stop.character, enc)
    if s.col > col then
      return nil
    end
    -- a range starting before the cursor repeats what is typed there: draw only what is new
    local typed = line:sub(s.col + 1, col)
    if text:sub(1, #typed) ~= typed then
      return nil
    end
    skip = #typed
  end
  s.text, s.ghost = text, text:sub(skip + 1)
  return s.ghost ~= "" and s or nil
end

local function request(bufnr)
  local state = states[bufnr]
  if not (state and M.enabled and in_insert_mode()) then
    return
  end
  if api.nvim_get_current_buf() ~= bufnr or vim.fn.pumvisible() == 1 then
    return -- ghost text over a completion menu only confuses
  end
  local client = vim.lsp.get_client_by_id(state.client_id)
  if not client then
    return
  end
  cancel_request(state)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding or "utf-16")
  params.context = { triggerKind = AUTOMATIC }
  local cursor = api.nvim_win_get_cursor(0)
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local token = {}
  local ok, id = compat.request(client, "textDocument/inlineCompletion", params, function(err, result)
    if state.pending ~= token then
      return -- cancelled or superseded
    end
    state.pending, state.request_id = nil, nil
    if err or not result or not api.nvim_buf_is_valid(bufnr) then
      return
    end
    -- changedtick is the version Neovim sends to the server: the answer must match both it and the cursor
    local now = api.nvim_win_get_cursor(0)
    if api.nvim_get_current_buf() ~= bufnr or api.nvim_buf_get_changedtick(bufnr) ~= tick
      or now[1] ~= cursor[1] or now[2] ~= cursor[2] or not in_insert_mode() then
      return
    end
    local suggestion = to_suggestion(bufnr, result, client, cursor, tick)
    if suggestion then
      show(bufnr, state, suggestion, client)
    end
  end, bufnr)
  if ok then
    state.pending, state.request_id = token, id
  end
end

--- Something changed in insert mode: drop the suggestion and ask again after a pause in typing.
function M.trigger(bufnr)
  local state = states[bufnr]
  if not state then
    return
  end
  M.clear(bufnr)
  if not M.enabled then
    return
  end
  state.timer:start(M.debounce_ms, 0, vim.schedule_wrap(function()
    request(bufnr)
  end))
end

--- The part of `text` that a partial accept takes.
local function part_of(text, kind)
  if kind == "word" then
    return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text:match("^%s+") or text
  elseif kind == "line" then
    return text:match("^\n?[^\n]*")
  end
  return text
end

--- Inserts the suggestion (all of it, or its next "word" or "line") at the cursor and moves the
--- cursor after it. Returns false when there is nothing to accept.
---@param kind? "all"|"word"|"line"
function M.accept(kind)
  local bufnr = api.nvim_get_current_buf()
  local state = states[bufnr]
  local s = state and state.suggestion
  local cursor = api.nvim_win_get_cursor(0)
  if not s or api.nvim_buf_get_changedtick(bufnr) ~= s.tick
    or cursor[1] ~= s.cursor[1] or cursor[2] ~= s.cursor[2] then
    return false
  end
  local typed = s.text:sub(1, #s.text - #s.ghost)
  local text = typed .. part_of(s.ghost, kind or "all")
  local whole = text == s.text
  -- a part stops at the cursor: what the item would replace after it stays until the rest is taken
  local end_col = whole and s.end_col or s.cursor[2]
  local client = vim.lsp.get_client_by_id(state.client_id)
  M.clear(bufnr)
  local lines = vim.split(text, "\n", { plain = true })
  api.nvim_buf_set_text(bufnr, s.row, s.col, s.end_row, end_col, lines)
  local row = s.row + #lines -- 1-based: the last inserted line
  local col = (#lines == 1 and s.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { row, col })
  if client then
    if whole and s.command then
      compat.exec_cmd(client, s.command, bufnr) -- the server counts accepts through it
    elseif not whole then
      compat.notify(client, "eyas/partialAccept", {
        uri = vim.uri_from_bufnr(bufnr),
        length = vim.fn.strchars(text) - vim.fn.strchars(typed),
      })
    end
  end
  return true
end

--- For an `expr` mapping: keys that accept the suggestion when one shows, else `fallback`
--- (so the key keeps its usual meaning). The edit runs from a <Cmd> key because an expr
--- mapping may not change the buffer.
function M.accept_keys(kind, fallback)
  if M.current() then
    return ("<Cmd>lua require('eyas.inline').accept(%q)<CR>"):format(kind)
  end
  return fallback
end

function M.attach(bufnr, client_id)
  if states[bufnr] then
    states[bufnr].client_id = client_id
    return
  end
  states[bufnr] = { client_id = client_id, timer = assert(uv.new_timer()) }
  local group = api.nvim_create_augroup("eyas.inline." .. bufnr, { clear = true })
  -- typing asks (after the debounce); leaving insert mode dismisses; a popup or another buffer
  -- hides the ghost text; unloading forgets the buffer
  for events, handler in pairs({
    [{ "InsertEnter", "TextChangedI", "CursorMovedI" }] = "trigger",
    [{ "InsertLeave" }] = "dismiss",
    [{ "BufLeave", "TextChangedP" }] = "clear",
    [{ "BufUnload", "BufWipeout" }] = "detach",
  }) do
    api.nvim_create_autocmd(events, {
      group = group,
      buffer = bufnr,
      callback = function()
        M[handler](bufnr)
      end,
    })
  end
end

function M.detach(bufnr)
  local state = states[bufnr]
  if not state then
    return
  end
  M.clear(bufnr)
  state.timer:close()
  states[bufnr] = nil
  pcall(api.nvim_del_augroup_by_name, "eyas.inline." .. bufnr)
end

function M.set_enabled(on)
  M.enabled = on
  if not on then
    for bufnr in pairs(states) do
      M.clear(bufnr)
    end
  end
end

return M
