"""Writing a network's IR graph as a readable PyTorch module: one statement per node, in the graph's order, under
comments quoting the .net lines that made them; each op's statement comes from its registry entry (`Op.torch`).

The module registers every dslc weight under its own hierarchical name (`layer2.block1.conv1.weight`), as
parameters (trainable) or buffers (running statistics), so `state_dict()` and dslc's weight files hold the same
names and shapes: weights move both ways by name. Symbolic dims stay symbolic: shapes are read from the tensors.
"""
from __future__ import annotations

import keyword
import re
from pathlib import Path

import networkx as nx

from dslc import ir
from dslc.ops import registry
from dslc.torchgen.helpers import HELPERS


class TorchCodegenError(Exception):
    """A graph the generator cannot write (an op without a torch lowering); the message is for the user."""


class Emit:
    """What an op's torch lowering sees of its node: the Python names of its inputs and weights, its attrs and
    types. `op.torch(e)` returns one Python expression (a tuple expression for several outputs)."""

    def __init__(self, gen: "Generator", node: str):
        nd = gen.g.nodes[node]
        self.gen, self.node = gen, node
        self.a = nd["attrs"]
        self.in_types = ir.input_types(gen.g, node)
        self.out_types = list(nd["outputs"])
        self.xs = [gen.value(src, idx) for src, idx in nd["inputs"]]
        self.training = "self.training"

    def x(self, i: int = 0) -> str:
        return self.xs[i]

    def w(self, key: str) -> str:
        return f"self.{attr_path(self.node)}.{key}"

    def helper(self, name: str) -> str:
        self.gen.helpers.add(name)
        return "_" + name


def attr_path(dotted: str) -> str:
    """`layer1.block1.conv1` as an attribute chain (getattr where a part is not an identifier)."""
    out = ""
    for part in dotted.split("."):
        out += f".{part}" if part.isidentifier() and not keyword.iskeyword(part) else f".__getattr__({part!r})"
    return out[1:]


def py(v) -> str:
    """A Python literal for an attribute value (tuples stay tuples)."""
    if isinstance(v, tuple):
        return "(" + ", ".join(py(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(py(x) for x in v) + "]"
    return repr(v)


def class_name(name: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", name)
    s = "".join(p[:1].upper() + p[1:] for p in parts if p) or "Network"
    return s if s[0].isalpha() else "Net" + s


class Generator:
    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.names: dict[tuple[str, int], str] = {}
        self.taken = {"self", "torch", "nn", "F", "out"}
        self.helpers: set[str] = {"params"}
        src = g.graph.get("source")
        try:
            self.lines = Path(src).read_text().splitlines() if src else []
        except (OSError, UnicodeDecodeError):
            self.lines = []

    def fresh(self, base: str) -> str:
        name = re.sub(r"\W", "_", base)
        if not name or name[0].isdigit():
            name = "v_" + name
        if keyword.iskeyword(name):
            name += "_"
        cand, k = name, 2
        while cand in self.taken:
            cand, k = f"{name}_{k}", k + 1
        self.taken.add(cand)
        return cand

    def value(self, node: str, idx: int) -> str:
        return self.names[(node, idx)]

    # ------------------------------------------------------------------------------------------ pieces
    def params_lines(self) -> list[str]:
        out = []
        for n in nx.topological_sort(self.g):
            weights = self.g.nodes[n]["weights"]
            for trainable in (True, False):
                specs = {k: s for k, s in weights.items() if s.trainable == trainable}
                if not specs:
                    continue
                args = ", ".join(f"{k}=({py(tuple(s.shape))}, {_init_spec(s)!r})" for k, s in specs.items())
                out.append(f"_params(self, {n!r}, {trainable}, {args})")
        return out

    def statement(self, n: str) -> list[str]:
        nd = self.g.nodes[n]
        op = registry.get(nd["op"])
        if op is None or op.torch is None:
            raise TorchCodegenError(f"op `{nd['op']}` (node `{n}`) has no PyTorch lowering yet")
        e = Emit(self, n)
        expr = op.torch(e)
        outs = [self.fresh(n if len(nd["outputs"]) == 1 else f"{n}_{i}") for i in range(len(nd["outputs"]))]
        for i, name in enumerate(outs):
            self.names[(n, i)] = name
        return [f"{', '.join(outs)} = {expr}"]

    def comment(self, n: str) -> str | None:
        span = self.g.nodes[n].get("span")
        if span is None or not getattr(span, "line", None):
            return None
        text = self.lines[span.line - 1].strip() if 0 < span.line <= len(self.lines) else ""
        return f"# {Path(span.file).name if span.file else ''}:{span.line}: {text}".rstrip()

    def body(self, nodes: list[str], indent: str) -> list[str]:
        lines, last = [], None
        for n in nodes:
            c = self.comment(n)
            if c and c != last:
                lines.append(indent + c)
                last = c
            lines += [indent + s for s in self.statement(n)]
        return lines

    # ------------------------------------------------------------------------------------------ module
    def source(self) -> str:
        g = self.g
        name = g.graph.get("name") or "network"
        inputs = list(g.graph.get("inputs") or [])
        targets = list(g.graph.get("targets") or [])
        for n in inputs + targets:
            self.names[(n, 0)] = self.fresh(n)
        order = [n for n in nx.topological_sort(g) if g.nodes[n]["op"] != "input"]
        model = [n for n in order if g.nodes[n].get("role") != "loss"]
        loss_nodes = [n for n in order if g.nodes[n].get("role") == "loss"]
        model_body = self.body(model, " " * 8)
        outputs = dict(g.graph.get("outputs") or {})
        out_items = ", ".join(f"{k!r}: {self.value(*v)}" for k, v in outputs.items())
        loss_body = self.body(loss_nodes, " " * 12) if loss_nodes else []
        cls = class_name(name)
        args = ", ".join(self.names[(n, 0)] for n in inputs)
        targs = "".join(f", {self.names[(n, 0)]}=None" for n in targets)
        doc = (g.graph.get("doc") or "").strip().splitlines()
        out = [f'"""PyTorch module for the dslc network `{name}`'
               + (f" ({Path(g.graph['source']).name})" if g.graph.get("source") else "") + ", written by "
               "`dslc export-torch`.", "",
               "state_dict() names are dslc's weight names: load a dslc checkpoint with",
               "`model.load_state_dict({k: torch.from_numpy(v) for k, v in numpy.load(path).items()})`.", '"""',
               "import torch", "import torch.nn as nn", "import torch.nn.functional as F", ""]
        for h in sorted(self.helpers):
            out += HELPERS[h].rstrip().splitlines() + [""]
        out += ["", f"class {cls}(nn.Module):"]
        out.append('    """' + (doc[0] if doc else f"The network `{name}`.") + '"""')
        out += [f"    inputs = {py(tuple(inputs))}", f"    outputs = {py(tuple(outputs))}",
                f"    targets = {py(tuple(targets))}", "",
                "    def __init__(self):", "        super().__init__()"]
        out += ["        " + s for s in self.params_lines()] or ["        pass"]
        ret = (f"out[{next(iter(outputs))!r}]" if len(outputs) == 1
               else "tuple(out[k] for k in self.outputs)")
        out += ["", f"    def forward(self, {args}):", f"        out = self.run({args})", f"        return {ret}", "",
                f"    def run(self, {args}{targs}):",
                '        """The outputs by name; with the targets, also "loss" and the loss\'s operands ("loss_inputs")."""']
        out += model_body
        out.append(f"        out = {{{out_items}}}")
        if loss_nodes:
            loss_src, _ = g.graph["loss"]
            lin = [self.value(s, i) for s, i in g.nodes[loss_src]["inputs"]]
            cond = " and ".join(f"{self.names[(n, 0)]} is not None" for n in targets) or "True"
            out.append(f"        if {cond}:")
            out += loss_body
            out.append(f"            out['loss'] = {self.value(*g.graph['loss'])}")
            out.append(f"            out['loss_inputs'] = ({', '.join(lin)},)")
        out.append("        return out")
        return "\n".join(out) + "\n"


def _init_spec(s) -> str:
    return f"fan_in:{s.fan_in}" if s.init == "fan_in" else s.init


def module_source(g: nx.DiGraph) -> str:
    """The generated module's source text (raises TorchCodegenError)."""
    return Generator(g).source()
