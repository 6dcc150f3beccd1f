"""textDocument/hover: on a layer or block call, what the call made (output type, op, layer name, parameters,
MACs) and the op's or block's documentation; on a name, the value bound to it (a tensor's type)."""
from __future__ import annotations

from lsprotocol import types as T

from dslc.frontend.values import Tensor
from dslc.lsp import describe as D
from dslc.lsp.analysis import Analysis
from dslc.lsp.index import word_at
from dslc.ops import registry

MAX_ROWS = 6


def hover(an: Analysis, line0: int, char0: int) -> T.Hover | None:
    w = word_at(an.lines, line0, char0)
    if w is None:
        return None
    word, start, end = w
    rng = T.Range(T.Position(line0, start), T.Position(line0, end))
    text = _call(an, an.calls_at(line0, char0)) or _name(an, line0, char0, word) or _static(an, word)
    if not text:
        return None
    return T.Hover(T.MarkupContent(T.MarkupKind.Markdown, text), rng)


def _instance(an: Analysis, fact) -> str:
    g = an.facts.graphs.get(fact.network)
    params, macs = D.cost(g, fact.nodes) if g is not None else (0, 0)
    if fact.kind == "op":
        name = fact.nodes[-1] if fact.nodes else "?"
    else:
        parts = [n.split(".") for n in fact.nodes]
        common = []
        for level in zip(*parts):
            if len(set(level)) != 1:
                break
            common.append(level[0])
        name = ".".join(common) or "?"
    return f"`{name}` → `{D.value_text(fact.value)}` · {D.cost_text(params, macs)}"


def _call(an: Analysis, facts: list) -> str | None:
    if not facts:
        return None
    first = facts[0]
    head = f"**{first.func}** ({first.kind})"
    if len(facts) == 1:
        rows = [head + " " + _instance(an, first)]
    else:
        rows = [f"{head}, {len(facts)} instances"]
        rows += [f"- {_instance(an, f)}" for f in facts[:MAX_ROWS]]
        if len(facts) > MAX_ROWS:
            rows.append(f"- … {len(facts) - MAX_ROWS} more")
    if first.kind == "op":
        doc = D.op_markdown(registry.get(first.func))
    else:
        doc = D.block_markdown(first.block, an.program.diagnostics.sources.get(first.block.module.file),
                               _where(an, first.block))
    return "\n\n".join(["\n".join(rows), "---", doc])


def _where(an: Analysis, block) -> str:
    file = block.module.file if block.module is not None else ""
    return "" if file == an.shown else f"from {file.rsplit('/', 1)[-1]}"


def _name(an: Analysis, line0: int, char0: int, word: str) -> str | None:
    key = an.ref_at(line0, char0)
    if key is None:
        t = an.target_at(line0, char0)
        key = (t[1], t[2]) if t is not None else None
    if key is None:
        return None
    values = an.facts.defs.get(key, [])
    if not values:
        return f"`{word}`: not computed (its statement has an error, or its block is never called)"
    shown = D.distinct(values)
    rows = [f"`{word}`: `{shown[0]}`" if len(shown) == 1 else f"`{word}`, {len(shown)} values:"]
    if len(shown) > 1:
        rows += [f"- `{s}`" for s in shown]
    made = [v for v in values if isinstance(v, Tensor)]
    if made:
        g = next((g for g in an.facts.graphs.values() if made[0].node in g), None)
        if g is not None:
            rows.append(f"made by `{made[0].node}` ({g.nodes[made[0].node]['op']})")
    return "\n\n".join(rows)


def _static(an: Analysis, word: str) -> str | None:
    """An op or block name where nothing was elaborated (an error earlier, or a block never called)."""
    op = registry.get(word)
    if op is not None:
        return D.op_markdown(op)
    block = an.modules.find_block(an.module, word) if an.module is not None else None
    if block is None and an.index is not None:
        d = an.index.find(word)
        block = d.node if d is not None else None
    if block is not None:
        return D.block_markdown(block, an.program.diagnostics.sources.get(block.module.file), _where(an, block))
    return None
