-- Headless Neovim (built-in LSP client, 0.7+) against `dslc lsp`: open a file, wait for its diagnostics, ask for
-- a hover, write what came back to $DSLC_NVIM_OUT, quit. tests/editors/test_neovim.py runs it.
local out = os.getenv("DSLC_NVIM_OUT")
local cmd = vim.split(os.getenv("DSLC_NVIM_CMD"), "\t")
vim.cmd("edit " .. os.getenv("DSLC_NVIM_FILE"))
local buf = vim.api.nvim_get_current_buf()
local id = vim.lsp.start_client({ name = "dslc", cmd = cmd, root_dir = vim.fn.getcwd() })
vim.lsp.buf_attach_client(buf, id)
local lines = {}
local ok = vim.wait(20000, function() return #vim.diagnostic.get(buf) > 0 end, 50)
for _, d in ipairs(vim.diagnostic.get(buf)) do
  table.insert(lines, string.format("diagnostic %d:%d %s", d.lnum, d.col, (d.message:gsub("\n", " | "))))
end
if not ok then table.insert(lines, "timeout waiting for diagnostics") end
local params = { textDocument = { uri = vim.uri_from_bufnr(buf) }, position = { line = 1, character = 4 } }
local res = vim.lsp.buf_request_sync(buf, "textDocument/hover", params, 10000) or {}
for _, r in pairs(res) do
  if r.result then table.insert(lines, "hover " .. (r.result.contents.value:gsub("\n", " | "))) end
end
vim.fn.writefile(lines, out)
vim.lsp.stop_client(id)
vim.cmd("qa!")
