"""The Python API, mirroring the CLI: `dslc.load(path)` parses, elaborates and checks a .net file.

The pipeline reads top to bottom and stops after any phase that found errors:
    read_source -> parse_modules (with imports) -> elaborate_networks -> (later: lower / train / serve)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from dslc.diagnostics import Diagnostics, Span, did_you_mean


@dataclass
class Program:
    """A checked .net file: its networks as IR graphs, and everything the checker said."""
    path: str
    doc: str = ""
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    networks: dict[str, nx.DiGraph] = field(default_factory=dict)
    network: str | None = None  # the selected network
    module: object = None

    @property
    def ok(self) -> bool:
        return not self.diagnostics.has_errors()

    @property
    def graph(self) -> nx.DiGraph:
        if self.network is None:
            raise ValueError(f"{self.path}: no network could be built:\n{self.diagnostics.render_all()}")
        return self.networks[self.network]

    def summary(self, depth: int | None = None):
        from dslc.summary import summarize
        return summarize(self.graph, depth)

    def raise_for_errors(self) -> "Program":
        if not self.ok:
            raise ProgramError(self)
        return self


class ProgramError(Exception):
    def __init__(self, program: Program):
        super().__init__(program.diagnostics.render_all())
        self.program = program


def load(path: str | Path, network: str | None = None, params: dict | None = None,
         text: str | None = None) -> Program:
    """Check a .net file. `network` picks one of several networks; `params` overrides network parameters.
    Never raises for mistakes in the program: look at `.ok` and `.diagnostics`. A missing file raises
    FileNotFoundError."""
    prog = Program(str(path))
    module, modules = parse_modules(prog, path, text)
    if module is None or prog.diagnostics.has_errors():
        return prog
    elaborate_networks(prog, module, modules, network, params)
    return prog


def parse_modules(prog: Program, path, text, modules=None):
    """`modules`: a ModuleSet sharing `prog.diagnostics` (the language server passes one that reads editor
    buffers and reuses parsed imports); a fresh one by default."""
    from dslc.frontend.modules import ModuleSet
    modules = modules if modules is not None else ModuleSet(prog.diagnostics)
    p = Path(path)
    if text is None and not p.exists():
        raise FileNotFoundError(str(path))
    if text is None and p.is_dir():
        raise IsADirectoryError(str(path))
    module = modules.load_root(p, text, shown=str(path))
    if module is not None:
        prog.doc = module.doc
        prog.module = module
    return module, modules


def elaborate_networks(prog: Program, module, modules, network: str | None, params: dict | None,
                       elaborator=None) -> None:
    """`elaborator`: makes the Elaborator from (modules, diagnostics); the language server's records what it
    computes."""
    from dslc.frontend.elaborate import Elaborator
    nets = module.networks
    if not nets:
        prog.diagnostics.error("this file defines no network", _file_span(prog.path),
                               "a file with only blocks is a library: import it from a network file")
        return
    if network is not None and network not in {n.name for n in nets}:
        prog.diagnostics.error(f"no network named `{network}` in this file", _file_span(prog.path),
                               did_you_mean(network, [n.name for n in nets]) or
                               f"networks: {', '.join(n.name for n in nets)}")
        return
    trains = _assign_trains(prog, module)
    el = (elaborator or Elaborator)(modules, prog.diagnostics)
    selected = network or nets[-1].name
    for net in nets:
        if network is not None and net.name != network:
            continue
        # parameter overrides configure the selected network (the last one unless `network` names another)
        g = el.elaborate_network(net, params if net.name == selected else None, trains.get(net.name))
        prog.networks[net.name] = g
    prog.network = selected


def _assign_trains(prog: Program, module) -> dict:
    """An unnamed `train { }` belongs to the network defined last before it."""
    out = {}
    names = [n.name for n in module.networks]
    for t in module.trains:
        target = t.network
        if target is None:
            before = [n for n in module.networks if (n.span.line, n.span.col) < (t.span.line, t.span.col)]
            target = before[-1].name if before else (names[0] if names else None)
        if target not in names:
            prog.diagnostics.error(f"train section for unknown network `{target}`", t.span)
            continue
        if target in out:
            prog.diagnostics.error(f"network `{target}` has two train sections", t.span,
                                   notes=[(out[target].span, "the first one")])
            continue
        out[target] = t
    return out


def _file_span(path):
    return Span(str(path), 1, 1)
