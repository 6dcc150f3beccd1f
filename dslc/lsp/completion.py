"""Completion and signature help. Both read the text up to the cursor (it is usually half typed and does not
parse) with the light tokeniser of dslc/frontend/syntax.py; names in scope, and the blocks, come from the
last analysis of the buffer that parsed."""
from __future__ import annotations

import re
from dataclasses import dataclass

from lsprotocol import types as T

from dslc.frontend import ast as A
from dslc.frontend.expressions import BUILTINS
from dslc.frontend.modules import std_modules
from dslc.frontend.syntax import open_brackets, tokenize
from dslc.frontend.train_config import KEYS, TRAIN_FUNCTIONS
from dslc.frontend.values import _show_default
from dslc.lsp import describe as D
from dslc.lsp.analysis import Analysis
from dslc.ops import registry

KEYWORDS = ["network", "block", "train", "import", "return", "if", "elif", "else", "repeat", "in", "as", "and",
            "or", "not", "true", "false", "none", "target"]


@dataclass
class Callee:
    name: str
    piped: bool  # `x |> name(`: the piped tensor is the first argument
    arg: int  # index of the argument being typed
    keyword: str | None  # `name=` of the argument being typed, if any
    given: set  # keyword arguments already written


def _offset(text: str, line0: int, char0: int) -> int:
    lines = text.split("\n")
    return sum(len(s) + 1 for s in lines[:line0]) + min(char0, len(lines[line0]) if line0 < len(lines) else 0)


def callee_at(text: str, line0: int, char0: int) -> Callee | None:
    """The call whose argument list holds the cursor."""
    upto = _offset(text, line0, char0)
    toks = tokenize(text[:upto])
    stack = open_brackets(toks, upto)
    if not stack or stack[-1].text != "(":
        return None
    paren = stack[-1]
    i = toks.index(paren)
    if i == 0 or toks[i - 1].kind != "word":
        return None
    piped = i >= 2 and toks[i - 2].text == "|>"
    depth, arg, keyword, given = 0, 0, None, set()
    inner = toks[i + 1:]
    for k, t in enumerate(inner):
        if t.text in ("(", "[", "{"):
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and t.text == ",":
            arg, keyword = arg + 1, None
        elif depth == 0 and t.text == "=" and k > 0 and inner[k - 1].kind == "word":
            keyword = inner[k - 1].text
            given.add(keyword)
    return Callee(toks[i - 1].text, piped, arg, keyword, given)


def _params_of(an: Analysis | None, name: str):
    """(label, [(parameter label, default text or None, doc)], tensor inputs) of an op, block or train function."""
    op = registry.get(name)
    if op is not None:
        ps = [(x, None, "tensor input") for x in op.inputs]
        ps += [(p.name, None if p.default is registry.REQUIRED else _show_default(p.default), p.doc)
               for p in op.params]
        return D.op_signature(op), ps, len(op.inputs), D.op_markdown(op)
    block = an.modules.find_block(an.module, name) if an is not None and an.module is not None else None
    if block is None and an is not None and an.index is not None:
        d = an.index.find(name, ("block",))
        block = d.node if d is not None else None
    if block is not None:
        ps = [(D.param_text(p), D.source_of(p.default) if p.has_default else None, "") for p in block.params]
        return D.block_signature(block), ps, 1, ""
    if name in TRAIN_FUNCTIONS:
        kind, defaults = TRAIN_FUNCTIONS[name]
        ps = [(k, _show_default(v), "") for k, v in defaults.items()]
        return f"{name}({', '.join(k if d is None else f'{k}={d}' for k, d, _ in ps)})", ps, 0, f"a {kind}"
    return None


def signature_help(an: Analysis | None, text: str, line0: int, char0: int) -> T.SignatureHelp | None:
    c = callee_at(text, line0, char0)
    if c is None:
        return None
    found = _params_of(an, c.name)
    if found is None:
        return None
    label, ps, _n_in, doc = found
    names = [p[0].split(":")[0].split(" ")[0] for p in ps]
    active = names.index(c.keyword) if c.keyword in names else c.arg + (1 if c.piped else 0)
    params = [T.ParameterInformation(p if d is None else f"{p}={d}", doc or None) for p, d, doc in ps]
    sig = T.SignatureInformation(label, T.MarkupContent(T.MarkupKind.Markdown, doc) if doc else None, params,
                                 active_parameter=min(active, max(len(params) - 1, 0)))
    return T.SignatureHelp([sig], active_signature=0, active_parameter=sig.active_parameter)


def _scope_names(an: Analysis | None, line0: int) -> list[tuple[str, str]]:
    """(name, what) bound before the cursor line in the definition around it (by the last good parse)."""
    if an is None or an.index is None:
        return []
    d = next((d for d in an.index.definitions if d.start[0] <= line0 <= d.end[0]), None)
    if d is None:
        return []
    out, seen = [], set()
    holders = [d]
    if d.kind == "train":  # a train section sees its network's tensors
        net = an.index.find(d.node.network) if d.node.network else next(
            (x for x in an.index.definitions if x.kind == "network" and x.start < d.start), None)
        if net is not None:
            holders.append(net)
    for h in holders:
        for name_span, def_span, name, _node in an.index.targets:
            inside = h.holds(name_span.line - 1, name_span.col - 1)
            if inside and (h is not d or name_span.line - 1 < line0 or isinstance(_node, A.Param)) \
                    and name not in seen:
                seen.add(name)
                out.append((name, ", ".join(D.distinct(an.facts.defs.get((def_span, name), []), 2))))
    return out


def completion(an: Analysis | None, text: str, line0: int, char0: int) -> T.CompletionList:
    lines = text.split("\n")
    before = lines[line0][:char0] if line0 < len(lines) else ""
    items: list[T.CompletionItem] = []
    K = T.CompletionItemKind
    stripped = before.lstrip()
    if stripped.startswith("import"):
        items += [T.CompletionItem(f"std.{m}", kind=K.Module) for m in std_modules()]
        return T.CompletionList(False, items)
    c = callee_at(text, line0, char0)
    if c is not None and c.keyword is None:
        found = _params_of(an, c.name)
        filled = c.arg + (1 if c.piped else 0)  # positional arguments written before this one
        for k, (p, d, doc) in enumerate(found[1] if found else []):
            name = p.split(":")[0].split(" ")[0]
            if k >= max(filled, found[2]) and name not in c.given:
                items.append(T.CompletionItem(f"{name}=", kind=K.Field, insert_text=f"{name}=",
                                              detail=f"default {d}" if d is not None else "required",
                                              documentation=doc or None, sort_text=f"0{name}"))
    after_pipe = re.sub(r"[A-Za-z_][A-Za-z0-9_]*$", "", before).rstrip().endswith("|>")  # `x |> rel`: a stage
    for name, op in sorted(registry.all_ops().items()):
        items.append(T.CompletionItem(name, kind=K.Function, detail=D.op_signature(op),
                                      documentation=T.MarkupContent(T.MarkupKind.Markdown, D.op_markdown(op)),
                                      sort_text=f"2{name}"))
    for name in sorted(registry.ALIASES):
        items.append(T.CompletionItem(name, kind=K.Function, detail=f"alias of {registry.ALIASES[name]}",
                                      sort_text=f"2{name}"))
    blocks = set()
    if an is not None and an.module is not None:
        blocks = an.modules.visible_blocks(an.module)
    for name in sorted(blocks):
        b = an.modules.find_block(an.module, name)
        items.append(T.CompletionItem(name, kind=K.Class, detail=D.block_signature(b), sort_text=f"1{name}"))
    if after_pipe:
        return T.CompletionList(False, items)
    for name, what in _scope_names(an, line0):
        items.append(T.CompletionItem(name, kind=K.Variable, detail=what or None, sort_text=f"0{name}"))
    in_train = an is not None and an.index is not None and any(
        d.kind == "train" and d.start[0] <= line0 <= d.end[0] for d in an.index.definitions)
    if in_train:
        items += [T.CompletionItem(k, kind=K.Property, detail=v, sort_text=f"1{k}") for k, v in KEYS.items()]
        items += [T.CompletionItem(k, kind=K.Constructor, detail=f"{v[0]}", sort_text=f"1{k}")
                  for k, v in TRAIN_FUNCTIONS.items()]
    items += [T.CompletionItem(k, kind=K.Function, detail="compile-time builtin", sort_text=f"3{k}")
              for k in BUILTINS]
    items += [T.CompletionItem(k, kind=K.Keyword, sort_text=f"4{k}") for k in KEYWORDS]
    return T.CompletionList(False, items)
