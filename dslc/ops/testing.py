"""Build one-node graphs from an op's registry cases, for the registry-driven tests of every phase."""
from __future__ import annotations

from dslc import ir
from dslc.ops.registry import Case, Op, resolve_attrs


def one_node_graph(op: Op, case: Case):
    """Inputs x0..xk feeding one node named `node`, whose outputs are the graph outputs y0..ym."""
    g = ir.new_graph(f"{op.name}_case")
    ins = list(case.inputs)
    srcs = [(ir.add_input(g, f"x{i}", t), 0) for i, t in enumerate(ins)]
    attrs = resolve_attrs(op, ins, dict(case.attrs))
    outs = op.infer(ins, attrs)
    ir.add_node(g, op.name, "node", srcs, attrs, outs, op.weights(ins, attrs))
    for j in range(len(outs)):
        g.graph["outputs"][f"y{j}"] = ("node", j)
    return g


def all_cases():
    """(op, case) for every registered op and case -- parametrise tests with this."""
    from dslc.ops.registry import all_ops
    return [(op, c) for op in all_ops().values() for c in op.cases]
