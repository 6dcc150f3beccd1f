"""Clean-up passes over the lowered node list, so the exported graph stays lean.

- Identity nodes are removed (consumers read the source directly), unless the Identity is what gives a
  graph output its declared name.
- Reshape chains collapse: a reshape-like node (Reshape, Flatten, Squeeze, Unsqueeze) whose only consumer
  is a Reshape to a constant shape without 0 entries is dropped.
- With `fold_bn` (the default; `--no-fold-bn` turns it off), an inference BatchNormalization right after a Conv
  (whose output feeds nothing else) is folded into the Conv's weight and bias, as both torch.onnx exporters do;
  any other BatchNormalization stays a node in inference form (running statistics).
- Dead nodes and unused initializers are dropped.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

RESHAPE_LIKE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def optimize(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], keep: set[str],
             fold_bn: bool = True, types: dict | None = None,
             fold_in_place: bool = False) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """`types`: tensor name -> dslc TensorType where known (lets reshapes with 0 entries collapse too).
    fold_in_place: conv weights may be scaled in place (nobody else holds them)."""
    nodes = list(nodes)
    inits = dict(inits)
    nodes = _drop_identities(nodes, keep)
    nodes = _collapse_reshapes(nodes, inits, keep, types or {})
    if fold_bn:
        nodes = _fold_bn(nodes, inits, keep, fold_in_place)
    nodes = _dce(nodes, keep)
    used = {i for n in nodes for i in n.input}
    inits = {k: v for k, v in inits.items() if k in used or k in keep}
    return nodes, inits


def _consumers(nodes):
    cons = defaultdict(list)
    for n in nodes:
        for i in n.input:
            if i:
                cons[i].append(n)
    return cons


def _replace_input(nodes, old, new):
    for n in nodes:
        for k, v in enumerate(n.input):
            if v == old:
                n.input[k] = new


def _drop_identities(nodes, keep):
    out = []
    for n in nodes:
        if n.op_type == "Identity" and n.domain in ("", "ai.onnx") and n.output[0] not in keep:
            _replace_input(nodes, n.output[0], n.input[0])
            continue
        out.append(n)
    return out


def _zeros_survive(shape, p, types) -> bool:
    """0 entries copy dims of the Reshape's input; after dropping the reshape-like `p` they copy dims of p's
    input instead: fine where those are the same dims."""
    zeros = [i for i, v in enumerate(shape.tolist()) if v == 0]
    if not zeros:
        return True
    a, b = types.get(p.input[0]), types.get(p.output[0])
    if a is None or b is None:
        return False
    return all(i < a.rank and i < b.rank and a.shape[i] == b.shape[i] for i in zeros)


def _collapse_reshapes(nodes, inits, keep, types):
    changed = True
    while changed:
        changed = False
        cons = _consumers(nodes)
        producer = {o: n for n in nodes for o in n.output}
        for n in nodes:
            if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] not in inits:
                continue
            shape = inits[n.input[1]]
            p = producer.get(n.input[0])
            if p is None or p.op_type not in RESHAPE_LIKE or p.output[0] in keep:
                continue
            if not _zeros_survive(shape, p, types):
                continue
            if len(cons[p.output[0]]) != 1:
                continue
            n.input[0] = p.input[0]
            nodes = [m for m in nodes if m is not p]
            changed = True
            break
    return nodes


def _fold_bn(nodes, inits, keep, in_place=False):
    cons = _consumers(nodes)
    producer = {o: n for n in nodes for o in n.output}
    drop = set()
    for bn in nodes:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.output[0] in keep:
            continue
        if len(cons[conv.output[0]]) != 1 or not all(i in inits for i in bn.input[1:5]):
            continue
        if conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] not in inits):
            continue
        if len(cons[conv.input[1]]) != 1:  # weight shared with another node: cannot rewrite in place
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        scale, beta, mean, var = (inits[i].astype(np.float64) for i in bn.input[1:5])
        w = inits[conv.input[1]]
        factor = scale / np.sqrt(var + eps)
        bias = inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
        # the per-channel factor in float64, the product in the weight's dtype: one pass over the weights
        # (ResNet-50: 25 M of them) instead of three, within one rounding of the float64 product; in place
        # where the weights are ours, as fresh pages for a new 45-100 MB array cost more than the multiply
        f = factor.astype(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
        if in_place and w.flags.writeable:
            w *= f
        else:
            inits[conv.input[1]] = w * f
        new_b = ((bias - mean) * factor + beta).astype(w.dtype)
        if len(conv.input) > 2 and conv.input[2]:
            inits[conv.input[2]] = new_b
        else:
            wname = conv.input[1]
            bname = (wname[: -len(".weight")] if wname.endswith(".weight") else wname) + ".bias"
            while bname in inits:
                bname += "_"
            inits[bname] = new_b
            if len(conv.input) == 2:
                conv.input.append(bname)
            else:
                conv.input[2] = bname
        old = conv.output[0]
        conv.output[0] = bn.output[0]
        if conv.doc_string and bn.doc_string and bn.doc_string != conv.doc_string:
            conv.doc_string = f"{conv.doc_string} (+ batchnorm {bn.doc_string})"
        del old
        drop.add(id(bn))
    return [n for n in nodes if id(n) not in drop]


def _dce(nodes, keep):
    needed = set(keep)
    out = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output if o):
            out.append(n)
            needed.update(i for i in n.input if i)
    return list(reversed(out))
