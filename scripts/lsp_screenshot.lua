-- Neovim side of scripts/lsp_screenshot.py: open a network, start `dslc lsp`, show the server's inlay hints
-- (Neovim 0.7 has no inlay-hint display: its textDocument/inlayHint answers are drawn as end-of-line virtual
-- text) and the hover on one name, then wait to be photographed.
local cmd = vim.split(os.getenv("DSLC_SHOT_CMD"), "\t")
local line, col = tonumber(os.getenv("DSLC_SHOT_LINE")), tonumber(os.getenv("DSLC_SHOT_COL"))
vim.o.number = true
vim.o.laststatus = 0
vim.cmd("edit " .. os.getenv("DSLC_SHOT_FILE"))
local buf = vim.api.nvim_get_current_buf()
local id = vim.lsp.start_client({ name = "dslc", cmd = cmd, root_dir = vim.fn.getcwd() })
vim.lsp.buf_attach_client(buf, id)
vim.wait(10000, function() return vim.lsp.buf_is_attached(buf, id) and next(vim.lsp.get_active_clients()) ~= nil end)
local ns = vim.api.nvim_create_namespace("dslc_hints")
local params = { textDocument = { uri = vim.uri_from_bufnr(buf) },
                 range = { start = { line = 0, character = 0 }, ["end"] = { line = 1000, character = 0 } } }
local res = vim.lsp.buf_request_sync(buf, "textDocument/inlayHint", params, 10000) or {}
for _, r in pairs(res) do
  for _, h in ipairs(r.result or {}) do
    vim.api.nvim_buf_set_extmark(buf, ns, h.position.line, 0,
      { virt_text = { { "  " .. h.label, "Comment" } }, virt_text_pos = "eol" })
  end
end
vim.api.nvim_win_set_cursor(0, { line, col })
vim.lsp.buf.hover()
