"""The language server behind `dslc lsp` (pygls + lsprotocol). It runs the compiler's own parser, module loader
and elaborator (dslc/api.py) on editor buffers and answers from what they computed; nothing is parsed twice.

    analysis.py    check one buffer: unsaved buffers read first, parsed imports reused between edits
    facts.py       the elaborator, recording each name's values and each call's graph nodes
    index.py       where definitions, assignment targets, names and calls are in one buffer
    convert.py     positions and diagnostics between dslc and LSP
    session.py     open buffers' analyses, debounced checks, diagnostics published per document
    hover.py, inlay.py, navigation.py, completion.py, describe.py   the features
    server.py      the LSP methods wired to the above
"""
