"""Elaboration of a network's `train { }` section: its body runs in its own frame; `loss = ...` names the loss."""
from __future__ import annotations

from dslc.diagnostics import UserError
from dslc.frontend import ast as A
from dslc.frontend.train_config import TrainConfig
from dslc.frontend.values import POISON, Env, Frame, Scope, Tensor, describe


class TrainSectionMixin:
    """The Elaborator's train-section methods (dslc/frontend/elaborate.py)."""

    # ---- train section ----------------------------------------------------------------------------------------
    def elaborate_train(self, train: A.TrainDef, frame: Frame) -> None:
        config = TrainConfig(train.span)
        sub = Frame(Env(frame.env), Scope(("loss",)), frame.module, "loss", frame.block, train=config)
        self.run_body(train.body, sub)
        if config.loss is None and "loss" in sub.env.vars:  # `loss = ...` failed and is reported already
            config.loss_span = sub.env.vars["loss"].span
        self.g.graph["train"] = config.finish(self.diags)
        self.g.graph["loss"] = config.loss
        self.report_unused(sub.env)

    def set_loss(self, value, stmt: A.Assign, frame: Frame) -> None:
        if value is POISON:
            return
        if not isinstance(value, Tensor) or value.type.rank != 0:
            what = f"a tensor {value.type}" if isinstance(value, Tensor) else describe(value)
            raise UserError(f"`loss` must be a scalar, got {what}", stmt.value.span,
                            "use a loss op: mse(...), bce(...), cross_entropy(...)")
        frame.train.loss = (value.node, value.index)
        frame.train.loss_span = stmt.span
