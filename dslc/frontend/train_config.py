"""The `train { }` section: its keys, the optimiser / schedule / data calls it may make, their defaults."""
from __future__ import annotations

from typing import Any

from dslc.diagnostics import Diagnostics, Span, UserError, did_you_mean
from dslc.frontend.ast import NONE
from dslc.frontend.values import describe

# function -> (kind, ordered parameters with defaults). A default of None means optional, absent.
TRAIN_FUNCTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("optimizer", {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}),
    "adam": ("optimizer", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
    "adamw": ("optimizer", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}),
    "lbfgs": ("optimizer", {"lr": 1.0, "max_iter": 20, "history": 100, "tolerance_grad": 1e-7,
                            "tolerance_change": 1e-9, "line_search": "strong_wolfe"}),
    "levenberg_marquardt": ("optimizer", {"lr": 1.0, "mu": 1e-3, "mu_dec": 0.1, "mu_inc": 10.0, "mu_max": 1e10}),
    "constant": ("schedule", {}),
    "step": ("schedule", {"step_size": 1, "gamma": 0.1, "warmup": 0}),
    "cosine": ("schedule", {"warmup": 0, "min_lr": 0.0}),
    "linear2d": ("data", {"n": 200, "seed": 0}),
    "nonseparable2d": ("data", {"n": 400, "seed": 0}),
    "rosenbrock": ("data", {"n": 400, "seed": 0}),
    "sinxsiny": ("data", {"n": 400, "seed": 0, "extent": 3.141592653589793}),
    "mnist": ("data", {"dir": None, "train": 8000}),
    "npz": ("data", {"path": None}),
    "csv": ("data", {"path": None, "target": -1}),
    "adding": ("data", {"n": 2000, "length": 50, "seed": 0}),
    "copy": ("data", {"n": 2000, "symbols": 10, "delay": 20, "seed": 0}),
    "text": ("data", {"path": None, "seq_len": 64, "stride": None}),
    # a tuple default: a list argument (of strings for augment, of numbers for mean / std)
    "images": ("data", {"path": None, "augment": (), "mean": (0.0,), "std": (1.0,)}),
    "npy": ("data", {"x": None, "y": None}),
}
OPTIONAL_INTS = {("text", "stride")}   # optional (None default) arguments that are integers, not paths
IMAGE_AUGMENTATIONS = ("flip", "crop", "pad_crop")   # dslc/train/image_data.py (not imported: check stays light)

KEYS: dict[str, str] = {
    "optimizer": "optimizer", "schedule": "schedule", "data": "data", "epochs": "positive int",
    "batch_size": "positive int", "seed": "int", "clip": "positive number", "val_split": "fraction",
    "metric": "metric", "shuffle": "bool", "checkpoint_every": "non-negative int",
}
METRICS = ("accuracy", "mse", "rmse", "none")
DEFAULTS = {"optimizer": {"name": "adam", **TRAIN_FUNCTIONS["adam"][1]}, "schedule": None, "data": None,
            "epochs": 10, "batch_size": 32, "seed": 0, "clip": None, "val_split": 0.0, "metric": None,
            "shuffle": True, "checkpoint_every": 0}


class TrainConfig:
    def __init__(self, span: Span | None):
        self.span = span
        self.values: dict[str, Any] = {}
        self.loss: tuple[str, int] | None = None
        self.loss_span: Span | None = None

    def config_call(self, c, args, kwargs) -> dict:
        kind, params = TRAIN_FUNCTIONS[c.func]
        names = list(params)
        if len(args) > len(names):
            raise UserError(f"`{c.func}` takes at most {len(names)} arguments, got {len(args)}", c.span,
                            f"signature: {c.func}({', '.join(names)})")
        out = {"name": c.func, "kind": kind}
        out.update({k: v for k, v in params.items() if v is not None})
        for k, v in zip(names, args):
            out[k] = v
        spans = {}
        for k, v, span in kwargs:
            if k not in params:
                raise UserError(f"`{c.func}` has no argument `{k}`", span,
                                did_you_mean(k, names) or f"signature: {c.func}({', '.join(names)})")
            out[k] = v
            spans[k] = span
        for k, v in out.items():
            if k in ("name", "kind"):
                continue
            default = params.get(k)
            if isinstance(default, tuple):
                _check_list(c.func, k, v, default, spans.get(k, c.span), names)
                out[k] = tuple(v)
                continue
            if isinstance(default, bool):
                want, ok = "true or false", isinstance(v, bool)
            elif isinstance(default, int) or (c.func, k) in OPTIONAL_INTS:
                want, ok = "an integer", isinstance(v, int) and not isinstance(v, bool)
            elif isinstance(default, float):
                want, ok = "a number", isinstance(v, (int, float)) and not isinstance(v, bool)
            else:  # a path or directory
                want, ok = "a string", isinstance(v, str)
            if not ok:
                raise UserError(f"`{k}` of `{c.func}` must be {want}, got {_show(v)}", spans.get(k, c.span),
                                f"signature: {c.func}({', '.join(names)})")
        if c.func in ("npz", "csv", "images") and "path" not in out:
            example = 'images("data/train_folder")' if c.func == "images" else f'{c.func}(path="data.{c.func}")'
            raise UserError(f"`{c.func}` needs a `path`", c.span, f"e.g. {example}")
        if c.func == "npy" and ("x" not in out or "y" not in out):
            raise UserError("`npy` needs two files: the samples and the labels", c.span, 'e.g. npy("x.npy", "y.npy")')
        return out

    def set(self, key: str, value, span: Span | None, value_span: Span | None) -> None:
        if key not in KEYS:
            hint = did_you_mean(key, list(KEYS) + ["loss"])
            opt = {n for n, (k, _) in TRAIN_FUNCTIONS.items() if k == "optimizer"}
            if hint is None and any(key in TRAIN_FUNCTIONS[n][1] for n in opt):
                hint = f"`{key}` is an optimizer argument: e.g. `optimizer = adam({key}=...)`"
            raise UserError(f"unknown train setting `{key}`", span, hint or f"settings: loss, {', '.join(KEYS)}")
        want = KEYS[key]
        where = value_span or span
        if want in ("optimizer", "schedule", "data"):
            if not isinstance(value, dict) or value.get("kind") != want:
                names = [n for n, (k, _) in TRAIN_FUNCTIONS.items() if k == want]
                raise UserError(f"`{key}` must be one of {', '.join(n + '(...)' for n in names)}", where)
        elif want in ("positive int", "non-negative int", "int"):
            if not isinstance(value, int) or isinstance(value, bool) or (want == "positive int" and value <= 0) \
                    or (want == "non-negative int" and value < 0):
                raise UserError(f"`{key}` must be a {want.replace('int', 'integer')}, got {_show(value)}", where)
        elif want == "positive number":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise UserError(f"`{key}` must be a positive number, got {_show(value)}", where)
        elif want == "fraction":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise UserError(f"`{key}` must be a fraction in [0, 1), got {_show(value)}", where)
        elif want == "metric":
            if value not in METRICS:
                hint = 'no metric is the string "none": `metric = "none"`' if value is NONE else None
                raise UserError(f"`metric` must be one of {', '.join(METRICS)}, got {_show(value)}", where,
                                did_you_mean(value, METRICS) if isinstance(value, str) else hint)
        elif want == "bool":
            if not isinstance(value, bool):
                raise UserError(f"`{key}` must be true or false", where)
        self.values[key] = value

    def finish(self, diags: Diagnostics) -> dict | None:
        if self.loss is None and self.loss_span is None:
            diags.error("the train section has no loss", self.span,
                        "add e.g. `loss = cross_entropy(logits, label)` with `target label: i64[N]`")
        out = dict(DEFAULTS)
        out.update(self.values)
        for k in ("optimizer", "schedule", "data"):
            if isinstance(out.get(k), dict):
                out[k] = {kk: vv for kk, vv in out[k].items() if kk != "kind"}
        return out


def _check_list(func: str, key: str, value, default: tuple, span, names) -> None:
    """A list argument: augment names, or numbers (mean / std)."""
    strings = key == "augment"
    want = "a list of names" if strings else "a list of numbers"
    if not isinstance(value, (list, tuple)):
        raise UserError(f"`{key}` of `{func}` must be {want}, got {_show(value)}", span,
                        f'e.g. {key}=["flip", "crop"]' if strings else f"e.g. {key}=[0.5, 0.5, 0.5]")
    for v in value:
        if strings:
            if v not in IMAGE_AUGMENTATIONS:
                raise UserError(f"unknown augmentation {_show(v)}", span,
                                (did_you_mean(v, IMAGE_AUGMENTATIONS) if isinstance(v, str) else None)
                                or f"augmentations: {', '.join(IMAGE_AUGMENTATIONS)}")
        elif not isinstance(v, (int, float)) or isinstance(v, bool):
            raise UserError(f"`{key}` of `{func}` must be {want}, got {_show(value)}", span)
    if not strings and (not value or (key == "std" and any(v <= 0 for v in value))):
        raise UserError(f"`{key}` of `{func}` must be " + ("positive numbers" if value else "a non-empty list"),
                        span)


def _show(value) -> str:
    """A compile-time value as the user wrote it: "text", true, 0.1, [1, 2], adam(...), a tensor f32[N, 3]."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return describe(value)
