"""A test double of dslc.torchgen for the torch engine's own tests: builds a torch module for graphs of a few
ops (linear, tanh, relu; losses cross_entropy, bce, mse) with state_dict keys == dslc weight names, so the
engine's machinery (optimisers, checkpoints across engines, DDP, devices) is tested whether or not the real
code generator is installed. The real one (dslc.torchgen) is tested by the parity tests over networks/*.net.

Run as a script, it is `dslc` with the stand-in installed (the DDP test starts its processes this way)."""
from __future__ import annotations

import sys

import networkx as nx
import torch
import torch.nn.functional as F


class StandInNet(torch.nn.Module):
    def __init__(self, g):
        super().__init__()
        self.g = g
        self.order = [n for n in nx.topological_sort(g)]
        self.layers = {}
        for n in self.order:
            nd = g.nodes[n]
            if nd["weights"]:
                assert "." not in n, "the stand-in handles flat node names only"
                m = torch.nn.Module()
                for key, spec in nd["weights"].items():
                    m.register_parameter(key, torch.nn.Parameter(torch.zeros(tuple(spec.shape))))
                self.add_module(n, m)

    def run(self, inputs, targets):
        g = self.g
        vals = dict(zip(g.graph["inputs"], inputs)) | dict(zip(g.graph["targets"], targets))
        out = {}
        for n in self.order:
            nd = g.nodes[n]
            op = nd["op"]
            if op == "input":
                out[n] = vals[n]
                continue
            xs = [out[s] for s, _ in nd["inputs"]]
            if op == "linear":
                m = getattr(self, n)
                out[n] = F.linear(xs[0], m.weight, getattr(m, "bias", None))
            elif op in ("tanh", "relu"):
                out[n] = getattr(torch, op)(xs[0])
            elif op == "cross_entropy":
                out[n] = F.cross_entropy(xs[0], xs[1])
            elif op == "bce":
                out[n] = F.binary_cross_entropy_with_logits(xs[0], xs[1])
            elif op == "mse":
                out[n] = F.mse_loss(xs[0], xs[1])
            else:
                raise NotImplementedError(op)
        return out

    def forward(self, *inputs):
        out = self.run(list(inputs), [])
        return [out[s] for s, _ in self.g.graph["outputs"].values()]


class StandInLoss(torch.nn.Module):
    def __init__(self, net, g):
        super().__init__()
        self.net = net
        self.g = g

    def forward(self, inputs, targets):
        out = self.net.run(inputs, targets)
        loss = self.g.graph["loss"][0]
        a, b = (out[s] for s, _ in self.g.nodes[loss]["inputs"])
        return out[loss], a, b


def install(monkeypatch=None) -> None:
    from dslc.train import torch_engine
    for name, fn in (("build_network", StandInNet), ("LossModule", StandInLoss)):
        if monkeypatch is not None:
            monkeypatch.setattr(torch_engine, name, fn)
        else:
            setattr(torch_engine, name, fn)


if __name__ == "__main__":
    install()
    from dslc.cli import main
    sys.exit(main(sys.argv[1:]))
