// The VS Code client for `dslc lsp`: starts the server over stdio for .net files and passes the settings on.
"use strict";
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function settings() {
  const c = vscode.workspace.getConfiguration("dslc");
  return { inlayHints: c.get("inlayHints", true), debounceMs: c.get("debounceMs", 40) };
}

async function activate(context) {
  const command = vscode.workspace.getConfiguration("dslc").get("path", "dslc");
  const server = { command, args: ["lsp"], transport: TransportKind.stdio };
  client = new LanguageClient("dslc", "dslc language server", { run: server, debug: server }, {
    documentSelector: [{ scheme: "file", language: "dslc" }, { scheme: "untitled", language: "dslc" }],
    initializationOptions: settings(),
    synchronize: { configurationSection: "dslc" },
  });
  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration((e) => {
    if (e.affectsConfiguration("dslc.path")) {
      vscode.window.showInformationMessage("dslc: reload the window to start the server from the new path");
    }
  }));
  await client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
