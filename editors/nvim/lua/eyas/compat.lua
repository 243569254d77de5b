-- Client calls that changed shape between Neovim 0.10 and 0.11: 0.11 made them methods
-- (`client:request`) and deprecates the 0.10 field functions (`client.request`).
local M = {}

local methods = vim.fn.has("nvim-0.11") == 1

---@return boolean ok, integer? request_id
function M.request(client, method, params, handler, bufnr)
  if methods then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.notify(client, method, params)
  if methods then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel(client, request_id)
  if methods then
    return client:cancel_request(request_id)
  end
  return client.cancel_request(request_id)
end

--- Runs a server command (an inline item's `command`). 0.10 has no `exec_cmd`, so it gets the
--- plain `workspace/executeCommand` request, which is all `exec_cmd` sends for a server command.
function M.exec_cmd(client, command, bufnr)
  local ignore = function() end
  if methods then
    return client:exec_cmd(command, { bufnr = bufnr }, ignore)
  end
  local params = { command = command.command, arguments = command.arguments }
  return M.request(client, "workspace/executeCommand", params, ignore, bufnr)
end

--- Byte column of an LSP `character` on `line` in the client's position encoding.
function M.byte_col(line, character, encoding)
  if encoding == "utf-8" then
    return math.min(character, #line)
  end
  local ok, col
  if methods then
    ok, col = pcall(vim.str_byteindex, line, encoding, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, encoding == "utf-16")
  end
  return ok and col or #line
end

return M
