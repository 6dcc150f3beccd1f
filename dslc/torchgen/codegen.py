"""Writing a network's IR graph as a readable PyTorch module: one nn.Module class per block (a block called
several times with the same structure is one class instantiated several times; its channel counts become
constructor arguments) and one for the network. Each class's forward runs its statements in the .net order,
one per node, under comments quoting the .net lines that made them; each op's statement comes from its
registry entry (`Op.torch`).

state_dict() names are dslc's hierarchical weight names (`layer2.block1.conv1.weight`): a block instance is the
sub-module at its scope path, and every weight is registered under its node's name inside it, as a parameter
(trainable) or a buffer (running statistics). Symbolic dims stay symbolic: shapes are read from the tensors.
"""
from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from dslc import ir
from dslc.ops import registry
from dslc.torchgen.blocks import Unit, build_units
from dslc.torchgen.helpers import HELPERS


SHOWN_CALLS = 4   # block calls listed in a class's docstring


class TorchCodegenError(Exception):
    """A graph the generator cannot write (an op without a torch lowering); the message is for the user."""


class Emit:
    """What an op's torch lowering sees of its node: the Python names of its inputs and weights, its attrs and
    types. `op.torch(e)` returns one Python expression (a tuple expression for several outputs)."""

    def __init__(self, g: nx.DiGraph, node: str, names: dict, module_path: str, helpers: set):
        nd = g.nodes[node]
        self.node, self._path, self._helpers = node, module_path, helpers
        self.a = nd["attrs"]
        self.in_types = ir.input_types(g, node)
        self.out_types = list(nd["outputs"])
        self.xs = [names[(src, idx)] for src, idx in nd["inputs"]]
        self.training = "self.training"

    def x(self, i: int = 0) -> str:
        return self.xs[i]

    def w(self, key: str) -> str:
        return f"self.{attr_path(self._path)}.{key}"

    def helper(self, name: str) -> str:
        self._helpers.add(name)
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


def _ident(base: str) -> str:
    name = re.sub(r"\W", "_", base)
    if not name or name[0].isdigit():
        name = "v_" + name
    return name + "_" if keyword.iskeyword(name) else name


class Names:
    """Variable names of one function body: fresh, valid, and never a module-level name."""

    def __init__(self):
        self.values: dict[tuple[str, int], str] = {}
        self.taken = {"self", "torch", "nn", "F", "out"}

    def fresh(self, base: str) -> str:
        name = _ident(base)
        cand, k = name, 2
        while cand in self.taken:
            cand, k = f"{name}_{k}", k + 1
        self.taken.add(cand)
        return cand


def _init_spec(s) -> str:
    if s.init == "fan_in":   # fan_in = the product of the trailing dims for every op's weight: the helper computes it
        return "fan_in" if s.fan_in == math.prod(s.shape[1:]) else f"fan_in:{s.fan_in}"
    return s.init


def _tuple_text(items) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


@dataclass(eq=False)
class ClassSpec:
    """One generated class and the units (block calls) that are its instances."""
    name: str
    block: str
    forward: list[str]
    instances: list[Unit] = field(default_factory=list)
    dims: list[tuple[str, tuple]] = field(default_factory=list)   # constructor arguments: name, value per instance
    exprs: dict = field(default_factory=dict)   # (node, key) -> shape; ("child", j) -> constructor arguments

    def value(self, u: Unit, dim: str):
        vec = dict(self.dims)[dim]
        return vec[self.instances.index(u)]


class Generator:
    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.helpers: set[str] = {"params"}
        self._files: dict[str, list[str]] = {}
        self.classes: list[ClassSpec] = []
        self._by_signature: dict = {}

    # ------------------------------------------------------------------------------------------ comments
    def comment(self, span) -> str | None:
        if span is None or not getattr(span, "line", None):
            return None
        lines = self.source_lines(span.file)
        text = lines[span.line - 1].strip() if 0 < span.line <= len(lines) else ""
        return f"# {Path(span.file).name if span.file else ''}:{span.line}: {text}".rstrip()

    def source_lines(self, file: str | None) -> list[str]:
        """The lines of the .net file a span points into (a block's own file for imported blocks)."""
        if file not in self._files:
            try:
                self._files[file] = Path(file).read_text().splitlines() if file else []
            except (OSError, UnicodeDecodeError):
                self._files[file] = []
        return self._files[file]

    # ------------------------------------------------------------------------------------------ statements
    def statement(self, u: Unit, n: str, names: Names) -> str:
        nd = self.g.nodes[n]
        op = registry.get(nd["op"])
        if op is None or op.torch is None:
            raise TorchCodegenError(f"op `{nd['op']}` (node `{n}`) has no PyTorch lowering yet")
        expr = op.torch(Emit(self.g, n, names.values, u.rel(n), self.helpers))
        outs = [names.fresh(u.rel(n) if len(nd["outputs"]) == 1 else f"{u.rel(n)}_{i}")
                for i in range(len(nd["outputs"]))]
        for i, name in enumerate(outs):
            names.values[(n, i)] = name
        return f"{', '.join(outs)} = {expr}"

    def call_statement(self, u: Unit, c: Unit, names: Names) -> str:
        args = ", ".join(names.values[t] for t in c.inputs)
        base = u.rel(c.dotted)
        outs = [names.fresh(base if len(c.outputs) == 1 else f"{base}_{i}") for i in range(len(c.outputs))]
        for t, name in zip(c.outputs, outs):
            names.values[t] = name
        return f"{', '.join(outs) or '_'} = self.{attr_path(base)}({args})"

    def body(self, u: Unit, items: list, names: Names, indent: str) -> list[str]:
        lines, last = [], None
        for item in items:
            span = self.g.nodes[item].get("span") if isinstance(item, str) else item.call.call
            c = self.comment(span)
            if c and c != last:
                lines.append(indent + c)
                last = c
            stmt = self.statement(u, item, names) if isinstance(item, str) else self.call_statement(u, item, names)
            lines.append(indent + stmt)
        return lines

    # ------------------------------------------------------------------------------------------ classes
    def block_class(self, u: Unit) -> ClassSpec:
        """The class of block call u: an existing one when its text would be the same."""
        for c in u.children:
            self.block_class(c)
        names = Names()
        for t, a in zip(u.inputs, u.arg_names):
            names.values[t] = names.fresh(a)
        lines = self.body(u, u.body, names, " " * 8)
        rets = [names.values[t] for t in u.outputs]
        lines.append(" " * 8 + "return " + (", ".join(rets) if rets else "None"))
        args = ", ".join(names.values[t] for t in u.inputs)
        forward = [f"    def forward(self{', ' if args else ''}{args}):"] + lines
        sig = (u.call.block, tuple(forward), self._weights_pattern(u),
               tuple((u.rel(c.dotted), id(c.cls)) for c in u.children))
        spec = self._by_signature.get(sig)
        if spec is None:
            taken = {k.name for k in self.classes} | {"F"}   # torch.nn.functional is F in the module
            base = class_name(u.call.block)
            name, k = base, 2
            while name in taken:
                name, k = f"{base}{k}", k + 1
            spec = ClassSpec(name, u.call.block, forward)
            self._by_signature[sig] = spec
            self.classes.append(spec)
        spec.instances.append(u)
        u.cls = spec
        return spec

    def _weights_pattern(self, u: Unit) -> tuple:
        return tuple((u.rel(n), k, len(s.shape), s.trainable, _init_spec(s))
                     for n in u.nodes for k, s in self.g.nodes[n]["weights"].items())

    def assign_dims(self, spec: ClassSpec) -> None:
        """Which sizes vary between the instances of a class: those become constructor arguments, named after
        the block parameter (or input's channel count) they equal in every instance where one does."""
        insts = spec.instances
        named: dict[tuple, str] = {}
        known: dict[tuple, str] = {}
        for pname, _v in (insts[0].call.params if insts[0].call else ()):
            vec = tuple(dict(i.call.params).get(pname) for i in insts)
            if all(isinstance(v, int) and not isinstance(v, bool) for v in vec):
                known.setdefault(vec, pname)
        for a, t in zip(insts[0].arg_names, range(len(insts[0].inputs))):
            types = [self.g.nodes[i.inputs[t][0]]["outputs"][i.inputs[t][1]] for i in insts]
            if all(ty.rank >= 2 and isinstance(ty.shape[1], int) for ty in types):
                known.setdefault(tuple(ty.shape[1] for ty in types), f"{a}_channels")

        def expr(vec, hint=None) -> str:
            if len(set(vec)) == 1:
                return repr(vec[0])
            if vec not in named:
                name = _ident(known.get(vec) or hint) if (known.get(vec) or hint) else None
                taken = set(named.values()) | {"self"}
                if not name or name in taken:
                    k = len(named) + 1
                    while f"d{k}" in taken:
                        k += 1
                    name = f"d{k}"
                named[vec] = name
                spec.dims.append((name, vec))
            return named[vec]

        u0 = insts[0]
        for n in u0.nodes:
            for key, ws in self.g.nodes[n]["weights"].items():
                shapes = [self.g.nodes[i.same(u0, n)]["weights"][key].shape for i in insts]
                spec.exprs[(n, key)] = tuple(expr(tuple(sh[a] for sh in shapes)) for a in range(len(ws.shape)))
        for j, c in enumerate(u0.children):
            kids = [i.child(u0.rel(c.dotted)) for i in insts]
            spec.exprs[("child", j)] = [expr(tuple(c.cls.value(kid, d) for kid in kids), d) for d, _vec in c.cls.dims]

    def init_lines(self, spec: ClassSpec) -> list[str]:
        u0 = spec.instances[0]
        out = []
        for item in u0.body:
            if isinstance(item, str):
                weights = self.g.nodes[item]["weights"]
                for trainable in (True, False):
                    keys = [k for k, s in weights.items() if s.trainable == trainable]
                    if keys:
                        args = ", ".join(f"{k}=({_tuple_text(spec.exprs[(item, k)])}, {_init_spec(weights[k])!r})"
                                         for k in keys)
                        out.append(f"_params(self, {u0.rel(item)!r}, {trainable}, {args})")
            else:
                j = u0.children.index(item)
                made = f"{item.cls.name}({', '.join(spec.exprs[('child', j)])})"
                rel = u0.rel(item.dotted)
                out.append(f"self.{rel} = {made}" if rel.isidentifier() and not keyword.iskeyword(rel)
                           else f"_attach(self, {rel!r}, {made})")
        return out or ["pass"]

    def class_text(self, spec: ClassSpec) -> list[str]:
        b = spec.instances[0].call
        where = f" ({Path(b.definition.file).name}:{b.definition.line})" if b.definition and b.definition.file else ""
        shown = spec.instances[:SHOWN_CALLS]
        uses = "; ".join(i.dotted + self._scalars(i) for i in shown)
        if len(spec.instances) > len(shown):
            uses += f"; and {len(spec.instances) - len(shown)} more"
        dims = ", ".join(d for d, _ in spec.dims)
        head = [f"class {spec.name}(nn.Module):",
                f'    """block `{spec.block}`{where}, {len(spec.instances)} '
                f'{"call" if len(spec.instances) == 1 else "calls"}: {uses}"""', "",
                f"    def __init__(self{', ' if dims else ''}{dims}):", "        super().__init__()"]
        return head + ["        " + s for s in self.init_lines(spec)] + [""] + spec.forward

    @staticmethod
    def _scalars(u: Unit) -> str:
        vals = [f"{k}={v!r}" for k, v in u.call.params if isinstance(v, (int, float, bool, str))]
        return f" ({', '.join(vals)})" if vals else ""

    # ------------------------------------------------------------------------------------------ module
    def source(self) -> str:
        g = self.g
        name = g.graph.get("name") or "network"
        inputs = list(g.graph.get("inputs") or [])
        targets = list(g.graph.get("targets") or [])
        added = {n: i for i, n in enumerate(g.nodes)}   # the elaborator adds nodes in the .net statement order
        order = [n for n in nx.lexicographical_topological_sort(g, key=added.get) if g.nodes[n]["op"] != "input"]
        model = [n for n in order if g.nodes[n].get("role") != "loss"]
        loss_nodes = [n for n in order if g.nodes[n].get("role") == "loss"]
        root = build_units(g, model)
        for c in root.children:
            self.block_class(c)
        for spec in self.classes:
            self.assign_dims(spec)
        names = Names()
        for n in inputs + targets:
            names.values[(n, 0)] = names.fresh(n)
        model_body = self.body(root, root.body, names, " " * 8)
        outputs = dict(g.graph.get("outputs") or {})
        out_items = ", ".join(f"{k!r}: {names.values[tuple(v)]}" for k, v in outputs.items())
        loss_body = self.body(root, loss_nodes, names, " " * 12) if loss_nodes else []
        taken = {k.name for k in self.classes} | {"F"}
        cls, k = class_name(name), 2
        while cls in taken:
            cls, k = f"{class_name(name)}{k}", k + 1
        self.root_class = cls
        rspec = ClassSpec(cls, name, [], [root])
        self.assign_dims(rspec)
        args = ", ".join(names.values[(n, 0)] for n in inputs)
        targs = "".join(f", {names.values[(n, 0)]}=None" for n in targets)
        doc = (g.graph.get("doc") or "").strip().splitlines()
        out = [f'"""PyTorch module for the dslc network `{name}`'
               + (f" ({Path(g.graph['source']).name})" if g.graph.get("source") else "") + ", written by "
               "`dslc export-torch`.", "",
               "state_dict() names are dslc's weight names: load a dslc checkpoint with",
               "`model.load_state_dict({k: torch.from_numpy(v) for k, v in numpy.load(path).items()})`.", '"""',
               "import torch", "import torch.nn as nn", "import torch.nn.functional as F", ""]
        class_texts = [self.class_text(s) for s in self.classes]
        init = self.init_lines(rspec)
        if any(line.startswith("_attach(") for text in class_texts + [init] for line in text):
            self.helpers.add("attach")
        for h in sorted(self.helpers):
            out += HELPERS[h].rstrip().splitlines() + [""]
        for text in class_texts:
            out += ["", *text, ""]
        out += ["", f"class {cls}(nn.Module):"]
        out.append('    """' + (doc[0] if doc else f"The network `{name}`.") + '"""')
        out += [f"    inputs = {py(tuple(inputs))}", f"    outputs = {py(tuple(outputs))}",
                f"    targets = {py(tuple(targets))}", "",
                "    def __init__(self):", "        super().__init__()"]
        out += ["        " + s for s in init]
        ret = (f"out[{next(iter(outputs))!r}]" if len(outputs) == 1
               else "tuple(out[k] for k in self.outputs)")
        out += ["", f"    def forward(self, {args}):", f"        out = self.run({args})", f"        return {ret}", "",
                f"    def run(self, {args}{targs}):",
                '        """The outputs by name; with the targets, also "loss" and the loss\'s operands ("loss_inputs")."""']
        out += model_body
        out.append(f"        out = {{{out_items}}}")
        if loss_nodes:
            loss_src, _ = g.graph["loss"]
            lin = [names.values[(s, i)] for s, i in g.nodes[loss_src]["inputs"]]
            cond = " and ".join(f"{names.values[(n, 0)]} is not None" for n in targets) or "True"
            out.append(f"        if {cond}:")
            out += loss_body
            out.append(f"            out['loss'] = {names.values[tuple(g.graph['loss'])]}")
            out.append(f"            out['loss_inputs'] = ({', '.join(lin)},)")
        out.append("        return out")
        return "\n".join(out) + "\n"


def module_source(g: nx.DiGraph) -> str:
    """The generated module's source text (raises TorchCodegenError)."""
    return Generator(g).source()


def root_class_name(g: nx.DiGraph, src: str | None = None) -> str:
    """The name of the network's class in the generated source (a block class may have taken the plain one)."""
    base = class_name(g.graph.get("name") or "network")
    if src is None:
        return base
    found = re.findall(rf"^class ({re.escape(base)}\d*)\(nn\.Module\):", src, re.M)
    return found[-1] if found else base
