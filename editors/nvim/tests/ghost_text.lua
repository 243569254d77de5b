-- End-to-end check of the ghost text in a real Neovim and a real `eyas serve` (tests/test_nvim.py):
--   nvim --headless --clean -u editors/nvim/tests/minimal_init.lua -c "luafile editors/nvim/tests/ghost_text.lua"
-- $EYAS_TEST_FILE: the Python file to edit; $EYAS_RESULT: where the JSON result goes.
-- Exits 0 after writing {ok = true, ...}, or 1 after writing {ok = false, error = ...}.
--
-- Typed keys are only processed while Lua is not running, so the steps run in a coroutine that
-- yields to the event loop (sleep) between keys and checks instead of blocking in vim.wait.
local api = vim.api
local uv = vim.uv or vim.loop
local eyas = require("eyas")
local inline = require("eyas.inline")

local result = { steps = {} }
local t0 = uv.hrtime()
local done = false
local co

local function ms()
  return math.floor((uv.hrtime() - t0) / 1e6)
end

local function finish(ok, err)
  if done then
    return
  end
  done = true
  result.ok, result.error, result.elapsed_ms = ok, err, ms()
  result.messages = api.nvim_exec2("messages", { output = true }).output
  local f = assert(io.open(assert(vim.env.EYAS_RESULT, "$EYAS_RESULT is not set"), "w"))
  f:write(vim.json.encode(result))
  f:close()
  if not ok then
    io.stderr:write("ghost_text.lua failed: " .. tostring(err) .. "\n")
  end
  vim.cmd(ok and "qall!" or "cquit 1")
end

local function step(name, value)
  result.steps[#result.steps + 1] = { name = name, at_ms = ms(), value = value }
end

local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    finish(false, debug.traceback(co, err))
  elseif coroutine.status(co) == "dead" then
    finish(true)
  end
end

local function sleep(delay)
  vim.defer_fn(resume, delay)
  coroutine.yield()
end

local function wait_for(what, timeout_ms, cond)
  local deadline = ms() + timeout_ms
  while true do
    local value = cond()
    if value then
      return value
    end
    if ms() > deadline then
      error(("timed out after %d ms waiting for %s"):format(timeout_ms, what), 0)
    end
    sleep(20)
  end
end

local function check(cond, message, ...)
  if not cond then
    error(message:format(...), 0)
  end
end

-- Keys as if typed, mappings applied; they run once this coroutine yields.
local function type_keys(keys)
  api.nvim_feedkeys(vim.keycode(keys), "t", false)
  sleep(30)
end

local function ghost_marks(buf)
  return api.nvim_buf_get_extmarks(buf, inline.ns, 0, -1, { details = true })
end

local function status()
  local answer
  eyas.status(function(err, st)
    answer = st or { error = err }
  end)
  return wait_for("eyas/status", 10000, function()
    return answer
  end)
end

-- Waits for a suggestion. The tiny model may have none to give (its answers change with the file's
-- path, which is in the prompt); when the server has answered without one, type another letter.
local function wait_for_ghost(buf, timeout_ms, nudge)
  local idle_since, nudges = nil, 0
  wait_for("ghost text", timeout_ms, function()
    if #ghost_marks(buf) > 0 and inline.current(buf) then
      return true
    end
    if inline.busy(buf) or not nudge then
      idle_since = nil
    elseif not idle_since then
      idle_since = ms()
    elseif ms() - idle_since > 300 and nudges < #nudge then
      nudges, idle_since = nudges + 1, nil
      api.nvim_feedkeys(nudge:sub(nudges, nudges), "t", false)
    end
  end)
  step("ghost", { nudges = nudges })
  return inline.current(buf)
end

local function run()
  vim.cmd.edit(vim.fn.fnameescape((assert(vim.env.EYAS_TEST_FILE, "$EYAS_TEST_FILE is not set"))))
  local buf = api.nvim_get_current_buf()
  check(vim.bo[buf].filetype == "python", "filetype is %q, not python", vim.bo[buf].filetype)
  local client = wait_for("the eyas client to attach", 60000, function()
    return eyas.clients(buf)[1]
  end)
  step("attached", { encoding = client.offset_encoding })

  -- 1. No suggestion: Tab keeps its usual meaning (Python's ftplugin indents with spaces).
  local tab = vim.fn.maparg("<Tab>", "i", false, true)
  check(tab.expr == 1 and (tab.desc or ""):find("Eyas"), "<Tab> is not the plugin's mapping: %s", vim.inspect(tab))
  type_keys("i<Tab>pass<Esc>")
  local line = wait_for("the typed line", 5000, function()
    local l = api.nvim_buf_get_lines(buf, 0, 1, false)[1]
    return l:find("pass", 1, true) and l
  end)
  check(line:match("^%s+pass$"), "Tab without a suggestion did not indent: %q", line)
  check(#ghost_marks(buf) == 0, "ghost text left after <Esc>")
  step("tab_fallthrough", line)
  api.nvim_buf_set_lines(buf, 0, -1, false, {})

  -- 2. Type, wait for the ghost text, accept it with Tab.
  type_keys("idef add(a, b):<CR>")
  local s = wait_for_ghost(buf, 60000, "return a + b")
  local marks = ghost_marks(buf)
  check(#marks == 1, "%d ghost extmarks, expected 1", #marks)
  local mark = marks[1]
  check(mark[2] == s.cursor[1] - 1 and mark[3] == s.cursor[2], "ghost text is not at the cursor")
  check(s.text ~= "", "empty suggestion")
  local before = api.nvim_buf_get_lines(buf, 0, -1, false)
  local cursor = api.nvim_win_get_cursor(0)
  check(cursor[1] == s.cursor[1] and cursor[2] == s.cursor[2], "cursor moved under the suggestion")
  step("shown", { text = s.text, cursor = cursor, before = before, mark = mark[4] })

  type_keys("<Tab>")
  local after = wait_for("the accepted text", 5000, function()
    local lines = api.nvim_buf_get_lines(buf, 0, -1, false)
    return not vim.deep_equal(lines, before) and lines
  end)
  local row, col = cursor[1], cursor[2]
  local current = before[row]
  local inserted = vim.split(current:sub(1, col) .. s.text .. current:sub(col + 1), "\n", { plain = true })
  local expected = vim.list_slice(before, 1, row - 1)
  vim.list_extend(expected, inserted)
  vim.list_extend(expected, before, row + 1)
  check(vim.deep_equal(after, expected), "buffer after accepting:\n%s\nexpected:\n%s",
    table.concat(after, "\n"), table.concat(expected, "\n"))
  local text_lines = vim.split(s.text, "\n", { plain = true })
  local want = { row + #text_lines - 1, (#text_lines == 1 and col or 0) + #text_lines[#text_lines] }
  local got = api.nvim_win_get_cursor(0)
  check(got[1] == want[1] and got[2] == want[2], "cursor after accepting at %d:%d, expected %d:%d",
    got[1], got[2], want[1], want[2])
  check(api.nvim_get_mode().mode == "i", "left insert mode on accept (mode %s)", api.nvim_get_mode().mode)
  step("accepted", { buffer = after, cursor = got })

  -- 3. The server counted it: the shown notification and the item's command.
  local st = wait_for("eyas/status to count the accept", 15000, function()
    local answer = status()
    return (answer.accepted or 0) >= 1 and (answer.shown or 0) >= 1 and answer
  end)
  step("status", st)

  -- 3b. A multi-line item, from a stand-in for the server's answer so that the check does not hang
  -- on what the tiny model says: drawn as inline text + a virtual line, inserted whole, the cursor
  -- after it, and its command still runs on the real server; then a word, then a line of it;
  -- then an answer that comes back after the cursor moved on.
  local multi = "total = a + b\n    return total"
  local answer_delay, asked, answered = 0, 0, 0
  local own_request = rawget(client, "request")
  client.request = function(...)
    local args = { ... }
    local first = type(args[1]) == "table" and 2 or 1 -- client:request (0.11) or client.request (0.10)
    local method, params, handler = args[first], args[first + 1], args[first + 2]
    if method ~= "textDocument/inlineCompletion" then
      return (own_request or getmetatable(client).__index.request)(...)
    end
    asked = asked + 1
    vim.defer_fn(function()
      local at = { start = params.position, ["end"] = params.position }
      handler(nil, { items = { { insertText = multi, range = at, command = {
        title = "accepted", command = "eyas.accepted", arguments = { params.textDocument.uri, #multi } } } } })
      answered = answered + 1
    end, answer_delay)
    return true, nil
  end
  local function fake_ghost()
    type_keys("<Esc>")
    api.nvim_buf_set_lines(buf, 0, -1, false, { "def add(a, b):", "    " })
    api.nvim_win_set_cursor(0, { 2, 3 })
    type_keys("a")
    wait_for_ghost(buf, 5000)
  end
  local ok_multi, err_multi = pcall(function()
    fake_ghost()
    local m = ghost_marks(buf)[1][4]
    check(m.virt_text[1][1] == "total = a + b" and m.virt_lines[1][1][1] == "    return total",
      "multi-line ghost text drawn as %s", vim.inspect(m))
    type_keys("<Tab>")
    local lines = api.nvim_buf_get_lines(buf, 0, -1, false)
    check(vim.deep_equal(lines, { "def add(a, b):", "    total = a + b", "    return total" }),
      "after accepting a multi-line item: %s", vim.inspect(lines))
    local c = api.nvim_win_get_cursor(0)
    check(c[1] == 3 and c[2] == #"    return total", "cursor after a multi-line accept at %d:%d", c[1], c[2])
    -- the next word, then the rest of the line (minimal_init.lua maps <M-Right> and <M-Down>)
    fake_ghost()
    type_keys("<M-Right>")
    check(api.nvim_get_current_line() == "    total", "after accepting a word: %q", api.nvim_get_current_line())
    fake_ghost()
    type_keys("<M-Down>")
    check(api.nvim_get_current_line() == "    total = a + b", "after accepting a line: %q", api.nvim_get_current_line())
    check(api.nvim_win_get_cursor(0)[2] == #"    total = a + b", "cursor after accepting a line")
    -- an answer that arrives after the user moved on is dropped
    answer_delay = 400
    type_keys("<Esc>")
    api.nvim_buf_set_lines(buf, 0, -1, false, { "def add(a, b):", "    " })
    api.nvim_win_set_cursor(0, { 2, 3 })
    type_keys("a")
    asked, answered = 0, 0
    wait_for("the request to go out", 2000, function()
      return asked >= 1
    end)
    type_keys("x")
    -- the answer for the old position comes back well before the one for the new position
    wait_for("the first answer", 2000, function()
      return answered >= 1
    end)
    check(#ghost_marks(buf) == 0, "an answer for an old cursor position was shown")
    wait_for_ghost(buf, 5000)
    check(ghost_marks(buf)[1][3] == #"    x", "ghost text not at the new cursor")
    answer_delay = 0
  end)
  client.request = own_request
  check(ok_multi, "%s", err_multi)
  st = wait_for("eyas/status to count the multi-line accept", 15000, function()
    local answer = status()
    return (answer.accepted or 0) >= 2 and (answer.partial or 0) >= 2 and answer
  end)
  step("accepted_multiline", { accepted = st.accepted, partial = st.partial, text = multi })

  -- Back to where the first suggestion came from (the model may have nothing to add after its
  -- own text); the server's cache answers at once.
  local function back_to_first_suggestion()
    type_keys("<Esc>")
    api.nvim_buf_set_lines(buf, 0, -1, false, before)
    api.nvim_win_set_cursor(0, { row, math.max(col - 1, 0) })
    type_keys(col > 0 and "a" or "i")
    check(api.nvim_win_get_cursor(0)[2] == col, "could not put the cursor back at column %d", col)
    return wait_for_ghost(buf, 60000)
  end

  -- 4. Moving the cursor clears the ghost text.
  back_to_first_suggestion()
  type_keys("<Left>")
  wait_for("the ghost text to clear after <Left>", 2000, function()
    return #ghost_marks(buf) == 0 and inline.current(buf) == nil
  end)
  step("cleared_on_move", api.nvim_win_get_cursor(0))

  -- 5. Accept one word (the accept_word_key of minimal_init.lua).
  s = back_to_first_suggestion()
  local word = s.text:match("^%s*[%w_]+") or s.text:match("^%s*[^%w_%s]+") or s.text:match("^%s+")
  local partial = word ~= s.text -- a one-word suggestion is accepted whole
  type_keys("<M-Right>")
  local line_now = wait_for("the accepted word", 5000, function()
    local l = api.nvim_buf_get_lines(buf, row - 1, row, false)[1]
    return l ~= current and l
  end)
  local want_line = (current:sub(1, col) .. word .. current:sub(col + 1))
  check(vim.split(want_line, "\n", { plain = true })[1] == line_now, "after accepting a word: %q, expected %q",
    line_now, want_line)
  step("accepted_word", { word = word, line = line_now, partial = partial })

  -- 6. Escape over a suggestion dismisses it.
  back_to_first_suggestion()
  type_keys("<Esc>")
  check(#ghost_marks(buf) == 0 and inline.current(buf) == nil, "ghost text left in normal mode")
  st = wait_for("eyas/status to count the partial accept and the dismissal", 15000, function()
    local answer = status()
    local counted = (answer.partial or 0) >= (partial and 1 or 0) and (answer.dismissed or 1) >= 1
    return counted and answer
  end)
  step("status_after", { partial = st.partial, dismissed = st.dismissed, shown = st.shown })

  -- 7. Yanked text goes to the server as context.
  local sent = {}
  local own_notify = rawget(client, "notify")
  client.notify = function(...)
    local args = { ... }
    local first = type(args[1]) == "table" and 2 or 1
    sent[#sent + 1] = { method = args[first], params = args[first + 1] }
    return (own_notify or getmetatable(client).__index.notify)(...)
  end
  api.nvim_buf_set_lines(buf, 0, -1, false, { "def add(a, b):", "    return a + b" })
  type_keys("ggyj")
  client.notify = own_notify
  local yank = vim.tbl_filter(function(n)
    return n.method == "eyas/yank"
  end, sent)[1]
  check(yank and yank.params.text == "def add(a, b):\n    return a + b", "eyas/yank not sent: %s", vim.inspect(sent))
  step("yank", yank.params)

  -- 8. The commands.
  local notes = {}
  vim.notify = function(msg)
    notes[#notes + 1] = msg
  end
  vim.cmd("EyasToggle")
  check(not inline.enabled and not eyas.options.enabled, ":EyasToggle did not turn ghost text off")
  vim.cmd("EyasToggle")
  check(inline.enabled and eyas.options.enabled, ":EyasToggle did not turn ghost text back on")
  vim.cmd("EyasStatus")
  local note = wait_for(":EyasStatus output", 10000, function()
    for _, n in ipairs(notes) do
      if n:find("^Eyas ready") then
        return n
      end
    end
  end)
  step("commands", note)
end

vim.defer_fn(function()
  finish(false, "the driver ran out of time: " .. vim.inspect(result.steps[#result.steps]))
end, tonumber(vim.env.EYAS_TEST_TIMEOUT_MS) or 150000)
co = coroutine.create(run)
vim.schedule(resume)
