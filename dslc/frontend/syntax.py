"""Syntax errors in plain words, and recovery so that several independent syntax errors are reported in one run.

Lark's LALR parser stops at the first unexpected token. `parse_errors` turns that into a diagnostic, then blanks
out (with spaces, so every position stays put) the statement or declaration that contains the mistake and
parses again, up to `MAX_ERRORS` times. Which text to blank is decided from the parser's own stack (where the
broken statement began) and a light re-tokenisation of the source (where the next statement begins: a line
whose first token starts a statement, indented no deeper than the broken one). The parse after the last
error is only used to find errors: a file with syntax errors is never elaborated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dslc.diagnostics import Diagnostic, Span
from dslc.frontend.grammar import lark_parser

MAX_ERRORS = 10


# ---- a light tokeniser (brackets, statement starts); the grammar's lexer stays the authority -------------------
@dataclass(frozen=True)
class Tok:
    kind: str  # word num str doc op other
    text: str
    pos: int
    line: int
    col: int
    first: bool  # first token on its line


_LEX = re.compile(r'(?P<doc>""".*?""")|(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<comment>#[^\n]*)|(?P<nl>\n)'
                  r'|(?P<ws>[ \t\r\f\v]+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)'
                  r'|(?P<op>\|>|\.\.|\*\*|//|==|!=|<=|>=)|(?P<other>.)', re.S)


def tokenize(text: str) -> list[Tok]:
    out: list[Tok] = []
    line, line_start, first = 1, 0, True
    for m in _LEX.finditer(text):
        kind, s = m.lastgroup, m.group()
        if kind == "nl":
            line, line_start, first = line + 1, m.end(), True
            continue
        if kind in ("ws", "comment"):
            continue
        out.append(Tok(kind, s, m.start(), line, m.start() - line_start + 1, first))
        first = False
        if "\n" in s:  # a docstring spanning lines
            line += s.count("\n")
            line_start = m.start() + s.rfind("\n") + 1
    return out


OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}


def open_brackets(toks: list[Tok], upto: int) -> list[Tok]:
    """The brackets still open just before offset `upto` (innermost last). A closer that does not match the
    innermost opener closes the nearest matching one further out (so one stray bracket does not derail it)."""
    stack: list[Tok] = []
    for t in toks:
        if t.pos >= upto:
            break
        if t.text in OPENERS:
            stack.append(t)
        elif t.text in CLOSERS:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i].text == CLOSERS[t.text]:
                    del stack[i:]
                    break
    return stack


def _line_indent(text: str, line: int) -> int:
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return 0
    s = lines[line - 1]
    return len(s) - len(s.lstrip())


def likely_unclosed_brace(text: str, toks: list[Tok], outer: Tok) -> Tok:
    """For a `{` left open at the end of the file, the `{` that is most likely missing its `}`: the first one
    inside `outer` whose matching `}` is not lined up with the line that opened it (indentation)."""
    stack: list[Tok] = []
    for t in toks:
        if t.pos <= outer.pos:
            continue
        if t.text == "{":
            stack.append(t)
        elif t.text == "}" and stack:
            o = stack.pop()
            if t.first and t.col - 1 != _line_indent(text, o.line):
                return o
    return outer


# ---- words ------------------------------------------------------------------------------------------------------
_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string", "DOCSTRING": "a docstring",
    "DTYPE": "a tensor type such as f32[N, 784]", "COMP_OP": "a comparison", "$END": "end of file",
}
_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "MINUS", "NOT", "TRUE", "FALSE", "NONE"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "AT", "COMP_OP", "QMARK", "AND", "OR", "LPAR", "LSQB",
              "DOT", "AS", "|>", "**", "//", ".."}
_STATEMENT = {"NAME", "RETURN", "IF", "TARGET"}
_ITEM = {"IMPORT", "BLOCK", "NETWORK", "TRAIN"}
# the order words appear in: closers and separators first, then keywords, then the groups
_ORDER = ["RPAR", "RSQB", "RBRACE", "COMMA", "EQUAL", "COLON", "LBRACE", "LPAR", "LSQB", "DOT", "|>", "AS", "IN",
          "..", "ELSE", "ELIF", "a statement", "an expression", "an operator", "NAME", "INT", "FLOAT", "STRING",
          "DTYPE"]


def _literal(term: str) -> str | None:
    try:
        pattern = lark_parser().get_terminal(term).pattern
    except (KeyError, AttributeError):
        return None
    return pattern.value if pattern.type == "str" else None


def _key(term: str) -> str:
    """Anonymous terminals (`__ANON_0`) by their text, so the tables above do not depend on grammar order."""
    if term.startswith("__ANON"):
        return _literal(term) or term
    return term


def word(term: str) -> str:
    term = _key(term)
    if term in _WORDS:
        return _WORDS[term]
    lit = _literal(term) if not term.startswith(("a ", "an ")) else None
    if lit is not None:
        return f"`{lit}`"
    if term in ("|>", "**", "//", ".."):
        return f"`{term}`"
    return term if term.startswith(("a ", "an ")) else term.lower()


def join_or(words: list[str]) -> str:
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def expected_words(expected) -> list[str]:
    exp = {_key(t) for t in expected} - {"SEMICOLON", "DOCSTRING"}
    groups = []
    if len(exp & _EXPR_START) >= 5:
        exp -= _EXPR_START
        groups.append("an expression")
    if len(exp & _OPERATORS) >= 5:
        exp -= _OPERATORS
        groups.append("an operator")
    if {"RETURN", "IF"} <= exp:
        exp -= _STATEMENT
        groups.append("a statement")
    if len(exp & _ITEM) >= 3:
        exp -= _ITEM
        groups.append("a declaration (import, block, network, train)")
    items = sorted(exp | set(groups), key=lambda t: (_ORDER.index(t) if t in _ORDER else len(_ORDER), t))
    words = [word(t) for t in items]
    if len(words) > 5:
        words = words[:5] + ["..."]
    return words


def token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    s = str(tok.value)
    kw = tok.type in ("RETURN", "IF", "ELIF", "ELSE", "TARGET", "REPEAT", "IN", "AS", "AND", "OR", "NOT", "TRUE",
                      "FALSE", "NONE", "IMPORT", "BLOCK", "NETWORK", "TRAIN")
    shown = f"`{s}`" if len(s) < 30 else f"`{s[:27]}...`"
    return f"keyword {shown}" if kw else shown


# ---- one error -> one diagnostic --------------------------------------------------------------------------------
KEYWORDS = {"import", "return", "if", "elif", "else", "repeat", "in", "as", "and", "or", "not", "true", "false",
            "none"}


def diagnose(e: UnexpectedInput, file: str, text: str, toks: list[Tok]) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        return _bad_character(e, file, text)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        return _end_of_file(e, file, text, toks)
    return _bad_token(e, file, text, toks)


def _bad_character(e: UnexpectedCharacters, file: str, text: str) -> Diagnostic:
    pos = e.pos_in_stream
    ch = text[pos] if pos < len(text) else "?"
    line, col = e.line, e.column
    span = Span(file, line, col, line, col + 1)
    if ch == '"':
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        return Diagnostic("error", "unterminated string", Span(file, line, col, line, col + (end - pos)),
                          'a string ends with `"` on the same line')
    hints = {
        "'": "strings use double quotes: \"...\"",
        "!": "write `not x` for negation and `!=` for \"not equal\"",
        "&": "write `and`", "|": "write `or` (`|>` is the pipeline operator)",
        "/": "comments start with `#`",
    }
    if ch in "\u201c\u201d\u2018\u2019":
        hint = 'typographic quotes: strings use straight double quotes "..."'
    elif ch.isalpha() and not ch.isascii():
        hint = "names use ASCII letters, digits and `_`"
    elif ch in "\u00a0\u200b\ufeff":
        hint = "an invisible non-ASCII space; retype the spaces here"
    else:
        hint = hints.get(ch)
    shown = repr(ch)[1:-1] if not ch.isprintable() else ch
    return Diagnostic("error", f"unexpected character `{shown}`", span, hint)


def matching_closer(toks: list[Tok], opener: Tok) -> Tok | None:
    depth = 0
    for t in toks:
        if t.pos < opener.pos:
            continue
        if t.text == opener.text:
            depth += 1
        elif t.text == OPENERS[opener.text]:
            depth -= 1
            if depth == 0:
                return t
    return None


def _end_of_file(e: UnexpectedInput, file: str, text: str, toks: list[Tok]) -> Diagnostic:
    if toks:
        t = toks[-1]
        end_line = t.line + t.text.count("\n")
        end_col = (len(t.text) - t.text.rfind("\n")) if "\n" in t.text else t.col + len(t.text)
        eof = Span(file, end_line, end_col)
    else:
        eof = Span(file, 1, 1)
    opened = open_brackets(toks, len(text) + 1)
    if opened:
        innermost = opened[-1]
        o = innermost
        if o.text == "{":
            o = likely_unclosed_brace(text, toks, opened[0] if opened[0].text == "{" else o)
        close = OPENERS[o.text]
        notes = [(eof, "the file ends here")]
        hint = f"add the missing `{close}`"
        if o is not innermost and o is not opened[0]:
            hint += " (judging by the indentation, this is the block left open)"
        return Diagnostic("error", f"this `{o.text}` is never closed: the file ends before its `{close}`",
                          Span(file, o.line, o.col, o.line, o.col + 1), hint, notes)
    exp = getattr(e, "expected", None) or getattr(e, "accepts", None) or []
    return Diagnostic("error", f"unexpected end of file, expected {join_or(expected_words(exp))}", eof)


def _bad_token(e: UnexpectedToken, file: str, text: str, toks: list[Tok]) -> Diagnostic:
    tok = e.token
    exp = {_key(t) for t in (e.accepts or e.expected)}
    span = Span(file, tok.line, tok.column, tok.end_line, tok.end_column)
    notes: list = []
    hint = None
    opened = open_brackets(toks, tok.start_pos)
    inner = opened[-1] if opened else None
    words = expected_words(exp)
    prev = _prev_tok(toks, tok.start_pos)

    if tok.type in ("NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "MINUS", "TRUE", "FALSE", "NONE", "NOT") \
            and "an expression" in words and prev is not None and prev.line < tok.line and prev.text in _CONTINUES:
        pass  # an expression continued on the next line: the usual messages below fit
    elif "an expression" in words and prev is not None and prev.line < tok.line and prev.text in ("=", "return"):
        return Diagnostic("error", f"expected a value after `{prev.text}`",
                          Span(file, prev.line, prev.col, prev.line, prev.col + len(prev.text)),
                          f"the line ends here; the next line starts with {token_text(tok)}")
    if inner is not None and OPENERS[inner.text] in {_literal(t) or t for t in exp} and inner.text != "{":
        close = OPENERS[inner.text]
        closer = matching_closer(toks, inner)
        if closer is not None and closer.line == inner.line and closer.pos > tok.start_pos:
            if "COMMA" in exp and tok.type in ("NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "TRUE", "FALSE",
                                               "NONE"):
                hint = "is a `,` missing?"
        else:
            notes.append((Span(file, inner.line, inner.col, inner.line, inner.col + 1),
                          f"this `{inner.text}` is not closed"))
            hint = f"is a `{close}` missing?"
    if str(tok.value) in ("block", "network", "train", "import") and tok.column == 1 and "RBRACE" in exp:
        braces = [b for b in opened if b.text == "{"]
        if braces:
            brace = likely_unclosed_brace(text, [t for t in toks if t.pos < tok.start_pos], braces[0])
            return Diagnostic("error", f"unexpected {token_text(tok)}: the `{{` on line {brace.line} is not closed",
                              span, f"add the missing `}}` before `{tok.value}`",
                              [(Span(file, brace.line, brace.col, brace.line, brace.col + 1),
                                "this `{` is not closed")])
        return Diagnostic("error", f"unexpected {token_text(tok)}: the declaration above is not finished", span)
    if tok.type == "EQUAL" and prev is not None and prev.line < tok.line and hint is None:
        hint = "a name is missing before `=`"
    elif tok.type == "EQUAL" and exp & {"LBRACE", "COMP_OP", "QMARK", "RPAR"} and "EQUAL" not in exp \
            and hint is None:
        prev_name = prev is not None and prev.kind == "word"
        declaring = inner is not None and inner.text == "(" and _declares(toks, inner)
        if declaring:
            hint = "a parameter is written `name`, `name = default` or `name: f32[...]`"
        elif "RPAR" in exp and not prev_name:
            hint = "a keyword argument is written `name=value`, with a plain name on the left"
        elif _unopened_closer_on_line(toks, tok):
            hint = "is a `(` missing?"
        elif "LBRACE" in exp or "QMARK" in exp:
            hint = "to compare two values write `==`"
    elif tok.type == "COLON" and exp <= {"EQUAL", "COMMA"} and prev is not None and prev.first:
        hint = f"a training target is declared `target {prev.text}: f32[...]` inside `train {{ }}`"
    elif str(tok.value) in KEYWORDS and (exp == {"NAME"} or ("a statement" in words and _next_text(toks, tok) == "=")
                                         or ("NAME" in exp and _next_text(toks, tok) in ("=", ":", ",", ")"))):
        hint = f"`{tok.value}` is a keyword; it cannot be used as a name"
    elif exp <= {"EQUAL", "COMMA"} and prev is not None and prev.kind == "word" and not prev.first:
        hint = f"is an operator or `|>` missing before `{prev.text}`?"
        span = Span(file, prev.line, prev.col, prev.line, prev.col + len(prev.text))
        return Diagnostic("error", f"unexpected `{prev.text}` after a complete expression", span, hint)
    elif exp <= {"EQUAL", "COMMA"} and prev is not None and prev.kind == "word" and prev.first:
        hint = "a statement is `name = value`, `return value`, `if ... { }` or `target name: type`"
    elif tok.type in ("NAME", "INT", "FLOAT", "STRING") and "RBRACE" in exp and prev is not None \
            and not tok.line > prev.line:
        hint = "is an operator, `,` or `|>` missing between these two?"
    elif tok.type in ("IF", "ELIF", "ELSE", "RETURN") and "an expression" in words and prev is not None \
            and prev.text in ("=", "return"):
        hint = "a value is missing"
    if str(tok.value) in ("block", "network", "train") and exp == {"NAME"} and hint is None:
        hint = f"`{tok.value}` is a keyword of declarations; it cannot be used as a name here"
    if "COLON" in exp and tok.type == "NAME" and str(tok.value) in ("f32", "f64", "i64", "i32", "bool") \
            and hint is None:
        hint = f"is a `:` missing? a tensor parameter is written `x: {tok.value}[...]`"
    if "DTYPE" in exp and tok.type == "NAME":
        if str(tok.value) in ("f32", "f64", "i64", "i32", "bool"):
            return Diagnostic("error", f"the tensor type `{tok.value}` needs its shape in brackets", span,
                              f"e.g. `{tok.value}[N, 784]`; a scalar is `{tok.value}[]`")
        return Diagnostic("error", f"unknown tensor type `{tok.value}`", span,
                          "tensor types are f32, f64, i64, i32 and bool, with a shape: `f32[N, 3, 224, 224]`")
    if tok.type == "EQUAL" and prev is not None and prev.kind == "word" and prev.first:
        k = toks.index(prev)
        pp = toks[k - 1] if k > 0 else None
        if pp is not None and pp.line < prev.line and pp.text in _CONTINUES:
            what = "a value" if pp.text in ("=", "return") else "the rest of the expression"
            return Diagnostic("error", f"expected {what} after `{pp.text}`",
                              Span(file, pp.line, pp.col, pp.line, pp.col + len(pp.text)),
                              f"the line ends here, so `{prev.text}` on the next line is read as {what} and "
                              f"its `=` is unexpected")
    if str(tok.value) in ("in", "as", "repeat", "import", "elif", "else") and "an expression" in words:
        hint = f"`{tok.value}` is a keyword; it cannot be used as a name"
    if tok.type == "LBRACE" and hint is None and sum(t.text == "{" for t in toks) > sum(t.text == "}" for t in toks):
        hint = "the file has one `{` more than `}`: is this one too many?"
    if tok.type in ("RPAR", "RSQB", "RBRACE") and not _has_opener(toks, tok) and hint is None:
        hint = f"this `{tok.value}` has no matching `{CLOSERS[str(tok.value)]}`"
    if exp & _ITEM and not (exp & {"RBRACE", "RPAR", "NAME"}) and tok.type != "DOCSTRING":
        # at the top level: a statement outside any block, usually after a `}` that closed it too early
        msg = f"unexpected {token_text(tok)} outside any block or network"
        if prev is not None and prev.text == "}":
            return Diagnostic("error", msg, span, "is there one `}` too many above?",
                              [(Span(file, prev.line, prev.col, prev.line, prev.col + 1),
                                "this `}` ends the declaration")])
        return Diagnostic("error", msg, span, "a file holds imports, blocks, networks and train sections")
    msg = f"unexpected {token_text(tok)}, expected {join_or(words)}"
    return Diagnostic("error", msg, span, hint, notes)


def _next_text(toks: list[Tok], tok: Token) -> str | None:
    return next((t.text for t in toks if t.pos > tok.start_pos), None)


def _has_opener(toks: list[Tok], tok: Token) -> bool:
    return any(o.text == CLOSERS[str(tok.value)] for o in open_brackets(toks, tok.start_pos))


_CONTINUES = {"=", "return", ",", "|>", "+", "-", "*", "/", "//", "%", "@", "**", "and", "or", "not", "?", ":", "==",
              "!=", "<", ">", "<=", ">=", "(", "["}


def _prev_tok(toks: list[Tok], pos: int) -> Tok | None:
    prev = None
    for t in toks:
        if t.pos >= pos:
            break
        prev = t
    return prev


def _unopened_closer_on_line(toks: list[Tok], tok: Token) -> bool:
    depth = 0
    for t in toks:
        if t.pos <= tok.start_pos or t.line != tok.line:
            continue
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
            if depth < 0:
                return True
    return False


def _declares(toks: list[Tok], paren: Tok) -> bool:
    """Whether this `(` opens the parameter list of `block name(` / `network name(`."""
    k = next((i for i, t in enumerate(toks) if t.pos == paren.pos), None)
    return k is not None and k >= 2 and toks[k - 1].kind == "word" and toks[k - 2].text in ("block", "network")


# ---- recovery -----------------------------------------------------------------------------------------------------
_STMT_WORDS = {"return", "if", "target"}
_ITEM_WORDS = {"import", "block", "network", "train"}


def _starts_statement(toks: list[Tok], i: int) -> bool:
    t = toks[i]
    if t.text in _STMT_WORDS or t.text in ("}", ";"):
        return True
    if t.kind != "word" or t.text in KEYWORDS:
        return False
    j = i + 1  # NAME ("," NAME)* "="
    while j + 1 < len(toks) and toks[j].text == "," and toks[j + 1].kind == "word":
        j += 2
    return j < len(toks) and toks[j].text == "="


def _value_start(v) -> int | None:
    if isinstance(v, Token):
        return v.start_pos
    if isinstance(v, Tree):
        meta = v.meta
        if not getattr(meta, "empty", True):
            return meta.start_pos
        for c in v.children:
            s = _value_start(c)
            if s is not None:
                return s
    return None


def _context(e: UnexpectedToken) -> tuple[str, int | None]:
    """("stmt" | "item", offset where the broken statement / declaration began) from the parser's stack."""
    from lark.parsers.lalr_analysis import Shift
    ps = e.interactive_parser.parser_state
    states = ps.parse_conf.parse_table.states
    stack, values = ps.state_stack, ps.value_stack
    for kind, term in (("stmt", "RETURN"), ("item", "NETWORK")):
        for k in range(len(stack) - 1, -1, -1):
            action = states[stack[k]].get(term)
            if action is not None and action[0] is Shift:
                starts = [s for s in (_value_start(v) for v in values[k:]) if s is not None]
                return kind, (min(starts) if starts else None)
    return "item", None


def recovery_region(e: UnexpectedInput, text: str, toks: list[Tok]) -> tuple[int, int] | None:
    """[start, end) of the text to blank so that parsing can go on past this error; None to stop."""
    if isinstance(e, UnexpectedCharacters):
        return e.pos_in_stream, e.pos_in_stream + 1
    if not isinstance(e, UnexpectedToken) or e.token.type == "$END":
        return None
    err = e.token.start_pos
    if e.token.type == "LBRACE" and sum(t.text == "{" for t in toks) > sum(t.text == "}" for t in toks):
        return err, err + 1  # a stray `{` (the file has one more `{` than `}`)
    kind, start = _context(e)
    if kind == "stmt" and str(e.token.value) in _ITEM_WORDS and e.token.column == 1:
        # a declaration begins inside a body: the one above is unfinished; drop it whole
        item = [t for t in toks if t.pos < err and t.first and t.col == 1 and t.text in _ITEM_WORDS]
        return (item[-1].pos, err) if item else None
    if start is None or start > err:
        start = err
    i0 = next((i for i, t in enumerate(toks) if t.pos >= start), None)
    ie = next((i for i, t in enumerate(toks) if t.pos >= err), None)
    if i0 is None or ie is None:
        return None
    anchor = toks[i0]
    end = len(text)
    for j in range(ie, len(toks)):
        t = toks[j]
        if j == ie and t.pos == start:
            continue  # the error token begins the broken statement itself: skip at least it
        if not t.first:
            continue
        if t.text in _ITEM_WORDS and t.col == 1:
            end = t.pos
            break
        if kind == "stmt" and t.col <= anchor.col and _starts_statement(toks, j):
            end = t.pos
            break
    if end <= start:
        return None
    # keep braces balanced: a `}` the region would swallow ends it; an opened `{` extends it past its `}`
    depth = 0
    closing = False  # past `end`, swallowing the rest of an opened `{ ... }` (and an `else { ... }` after it)
    for i, t in enumerate(toks):
        if t.pos < start:
            continue
        if t.pos >= end:
            if depth <= 0 and not closing:
                break
            closing = True
            if t.text == "{":
                depth += 1
            elif t.text == "}":
                depth -= 1
                if depth == 0:
                    end = t.pos + 1
                    if i + 1 < len(toks) and toks[i + 1].text in ("else", "elif"):
                        continue
                    break
            continue
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
            if depth < 0 and kind == "stmt":
                end = t.pos
                break
            depth = max(depth, 0)  # at the top level a stray `}` goes with the broken text
    return (start, end) if end > start else None


def blank(text: str, start: int, end: int) -> str:
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def error_offset(e: UnexpectedInput) -> int:
    if isinstance(e, UnexpectedToken):
        return e.token.start_pos if e.token.type != "$END" else 1 << 60
    if isinstance(e, UnexpectedCharacters):
        return e.pos_in_stream
    return 1 << 60


def parse_errors(parse, first: UnexpectedInput, text: str, file: str) -> list[Diagnostic]:
    """All syntax errors worth reporting, starting from the parser's first complaint `first`."""
    return _recover(parse, first, text, file)[0]


def recovered_text(parse, first: UnexpectedInput, text: str) -> str | None:
    """The text with each statement that holds a syntax error blanked out, if the rest then parses (else None).
    Every position stays put: the language server checks the rest of a half-typed buffer this way."""
    _, work, parsed = _recover(parse, first, text, "")
    return work if parsed else None


def _recover(parse, first: UnexpectedInput, text: str, file: str) -> tuple[list[Diagnostic], str, bool]:
    """(diagnostics, the text with the broken statements blanked, whether that text parses)."""
    diags = []
    work, e, last = text, first, -1
    lexer_lines: set[int] = set()
    while e is not None and len(diags) < MAX_ERRORS:
        toks = tokenize(work)
        pos = error_offset(e)
        if pos <= last:
            break
        line = e.line if isinstance(e, UnexpectedCharacters) else getattr(getattr(e, "token", None), "line", None)
        if line not in lexer_lines:  # after a bad character, the rest of its line is not worth more reports
            diags.append(diagnose(e, file, work, toks))
            if isinstance(e, UnexpectedCharacters):
                lexer_lines.add(e.line)
        region = recovery_region(e, work, toks)
        if region is None:
            break
        work, last = blank(work, *region), pos
        try:
            parse(work)
            e = None
        except UnexpectedInput as e2:
            e = e2
    return diags, work, e is None
