"""A small TextMate grammar engine, enough to run editors/vscode/syntaxes/dslc.tmLanguage.json the way
vscode-textmate does: per line, the rule whose regex matches earliest wins (ties: the end of the open
begin/end rule first, then the first rule in order); `match` rules with `name` and `captures`, `begin`/`end`
rules that span lines, `patterns` lists and `include` of `#repository` entries or `$self`. The grammar's
regexes are written in the subset where Oniguruma and Python's `re` agree."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Token:
    line: int  # 0-based
    start: int
    end: int
    scopes: tuple[str, ...]


class Grammar:
    def __init__(self, path: Path):
        self.data = json.loads(Path(path).read_text())
        self.scope = self.data["scopeName"]
        self._compiled: dict[str, re.Pattern] = {}

    def _re(self, pattern: str) -> re.Pattern:
        if pattern not in self._compiled:
            self._compiled[pattern] = re.compile(pattern)
        return self._compiled[pattern]

    def _rules(self, patterns: list) -> list[dict]:
        """The patterns with includes resolved, in order."""
        out: list[dict] = []
        for p in patterns:
            if "include" in p:
                inc = p["include"]
                target = self.data["patterns"] if inc == "$self" else [self.data["repository"][inc[1:]]]
                out.extend(self._rules(target))
            elif "match" in p or "begin" in p:
                out.append(p)
            elif "patterns" in p:
                out.extend(self._rules(p["patterns"]))
        return out

    def tokenize(self, text: str) -> list[Token]:
        tokens: list[Token] = []
        stack: list[tuple[dict | None, tuple[str, ...], re.Pattern | None]] = [(None, (self.scope,), None)]
        for n, line in enumerate(text.split("\n")):
            pos = 0
            while pos <= len(line):
                rule, scopes, end = stack[-1]
                patterns = self.data["patterns"] if rule is None else rule.get("patterns", [])
                best = None  # (start, order, kind, match, rule)
                if end is not None:
                    m = end.search(line, pos)
                    if m:
                        best = (m.start(), -1, "end", m, rule)
                for i, r in enumerate(self._rules(patterns)):
                    m = self._re(r.get("match") or r["begin"]).search(line, pos)
                    if m and (best is None or (m.start(), i) < best[:2]):
                        best = (m.start(), i, "match" if "match" in r else "begin", m, r)
                if best is None:
                    if pos < len(line):
                        tokens.append(Token(n, pos, len(line), scopes))
                    break
                start, _, kind, m, r = best
                if start > pos:
                    tokens.append(Token(n, pos, start, scopes))
                if kind == "end":
                    tokens += self._captured(n, m, scopes, r.get("endCaptures", {}))
                    stack.pop()
                elif kind == "match":
                    inner = scopes + ((r["name"],) if "name" in r else ())
                    tokens += self._captured(n, m, inner, r.get("captures", {}))
                else:
                    inner = scopes + ((r["name"],) if "name" in r else ())
                    tokens += self._captured(n, m, inner, r.get("beginCaptures", {}))
                    stack.append((r, inner, self._re(r["end"])))
                if m.end() == pos and kind == "match":  # an empty match must not loop
                    if pos < len(line):
                        tokens.append(Token(n, pos, pos + 1, scopes))
                    pos += 1
                else:
                    pos = m.end()
                if pos >= len(line) and kind != "begin":
                    break
        return [t for t in tokens if t.end > t.start]

    @staticmethod
    def _captured(n: int, m: re.Match, scopes: tuple, captures: dict) -> list[Token]:
        """The match as tokens: captured groups get their own scope, the rest of the match the rule's."""
        cuts = [(m.start(int(k)), m.end(int(k)), c["name"]) for k, c in captures.items()
                if m.group(int(k)) is not None and "name" in c]
        out, pos = [], m.start()
        for s, e, name in sorted(cuts):
            if s > pos:
                out.append(Token(n, pos, s, scopes))
            out.append(Token(n, s, e, scopes + (name,)))
            pos = e
        if m.end() > pos:
            out.append(Token(n, pos, m.end(), scopes))
        return out
