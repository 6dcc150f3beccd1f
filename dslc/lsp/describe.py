"""Text about ops, blocks and values, as hover, completion and signature help show it: the op's doc and
parameters from the registry (the text docs/language.md is generated from), a block's signature and the
comment above it, a tensor's type, and the parameter count and MACs of the layers a call made."""
from __future__ import annotations

import math

from dslc.frontend import ast as A
from dslc.frontend.values import Tensor, _show_default, describe, signature_hint
from dslc.ops import registry
from dslc.summary import human, node_macs


def op_signature(op: registry.Op) -> str:
    return signature_hint(op).removeprefix("signature: ")


def op_markdown(op: registry.Op) -> str:
    out = [f"```\n{op_signature(op)}\n```", op.doc] if op.doc else [f"```\n{op_signature(op)}\n```"]
    rows = []
    for p in op.params:
        default = "required" if p.default is registry.REQUIRED else f"default `{_show_default(p.default)}`"
        choices = f" ({', '.join(map(str, p.choices))})" if p.choices else ""
        rows.append(f"- `{p.name}`: {p.kind}{choices}, {default}" + (f" — {p.doc}" if p.doc else ""))
    if rows:
        out.append("\n".join(rows))
    return "\n\n".join(out)


def param_text(p: A.Param) -> str:
    if p.type is not None:
        return f"{p.name}: {p.type.dtype}[{', '.join(str(d) for d in p.type.dims)}]"
    if p.has_default:
        return f"{p.name} = {source_of(p.default)}"
    return p.name


def source_of(e) -> str:
    """A short rendering of a default value expression (constants and names; `…` for anything longer)."""
    if isinstance(e, A.Const):
        return _show_default(None if e.value is A.NONE else e.value)
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.ListExpr):
        return "[" + ", ".join(source_of(i) for i in e.items) + "]"
    if isinstance(e, A.Unary) and e.op == "neg":
        return "-" + source_of(e.operand)
    return "…"


def block_signature(block: A.BlockDef) -> str:
    return f"{block.kind} {block.name}({', '.join(param_text(p) for p in block.params)})"


def block_comment(block: A.BlockDef, text: str | None) -> str:
    """The `#` lines just above a block (std's blocks are documented that way), or the file's docstring for a
    network."""
    if block.kind == "network" and block.module is not None and block.module.doc:
        return block.module.doc
    if not text or block.span is None:
        return ""
    lines = text.splitlines()
    j = block.span.line - 2
    out = []
    while 0 <= j < len(lines) and lines[j].lstrip().startswith("#"):
        out.insert(0, lines[j].lstrip()[1:].strip())
        j -= 1
    return " ".join(out)


def block_markdown(block: A.BlockDef, text: str | None, where: str = "") -> str:
    parts = [f"```\n{block_signature(block)}\n```"]
    if where:
        parts.append(f"*{where}*")
    comment = block_comment(block, text)
    if comment:
        parts.append(comment)
    return "\n\n".join(parts)


def value_text(v) -> str:
    if isinstance(v, Tensor):
        return str(v.type)
    if isinstance(v, tuple):
        return ", ".join(value_text(x) for x in v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, list) and len(v) <= 16 and all(isinstance(x, (int, float, str)) for x in v):
        return "[" + ", ".join(_show_default(x) for x in v) + "]"
    return describe(v)


def distinct(values, limit: int = 4) -> list[str]:
    out: list[str] = []
    for v in values:
        s = value_text(v)
        if s not in out:
            out.append(s)
    return out[:limit] + ([f"… {len(out) - limit} more"] if len(out) > limit else [])


def cost(g, nodes) -> tuple[int, int]:
    """(trainable parameters, MACs at batch 1) of graph nodes."""
    params = macs = 0
    for n in nodes:
        if n not in g:
            continue
        params += sum(math.prod(s.shape) for s in g.nodes[n]["weights"].values() if s.trainable)
        macs += node_macs(g, n)
    return params, macs


def cost_text(params: int, macs: int) -> str:
    return f"params {params:,} · MACs {human(macs)}"
