"""dslc networks as PyTorch modules (PyTorch is optional: import torch only through here).

    module_source(g) -> str         a readable, self-contained module (imports only torch): `dslc export-torch`
    build_module(g) -> nn.Module    that module, executed and instantiated (no file): what the torch engine trains
    loss_module(net, g) -> nn.Module
        forward(inputs: list, targets: list) -> (loss, prediction, target): the train section's loss and its
        two operands (what Executor.loss_and_grads returns for metrics); DDP wraps this module

The network module: `forward(*inputs)` gives the outputs (a tensor, or a tuple in declaration order);
`run(*inputs, **targets)` gives every output by name and, with the targets, "loss" and "loss_inputs".
state_dict() keys are exactly dslc's weight names (trainable weights as parameters, running statistics as
buffers), so `dslc.weights` files load by name. Train / eval mode follows torch (`module.train()`): batchnorm
uses batch statistics and updates its running ones with dslc's (= PyTorch's) momentum convention; dropout is on.
Each op's statement comes from its registry entry's `torch` lowering (dslc/ops/registry.py).
"""
from __future__ import annotations

from dslc.torchgen.codegen import TorchCodegenError, class_name, module_source, root_class_name

__all__ = ["TorchCodegenError", "module_source", "root_class_name", "build_module", "loss_module"]


def build_module(g):
    """The network of graph g as a torch.nn.Module (its generated source, executed)."""
    src = module_source(g)
    namespace: dict = {"__name__": f"dslc_generated_{class_name(g.graph.get('name') or 'network')}"}
    exec(compile(src, f"<dslc export-torch {g.graph.get('name')}>", "exec"), namespace)
    module = namespace[root_class_name(g, src)]()
    module.dslc_source = src
    return module


def loss_module(net, g):
    """A module whose forward(inputs, targets) is (loss, prediction, target) of the train section's loss."""
    import torch

    if g.graph.get("loss") is None:
        raise TorchCodegenError(f"network `{g.graph.get('name')}` has no train section with a loss")

    class TrainLoss(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inputs, targets):
            names = list(self.net.targets)
            out = self.net.run(*inputs, **dict(zip(names, targets)))
            pred, target = out["loss_inputs"][:2]
            return out["loss"], pred, target

    return TrainLoss(net)
