"""Regenerate the generated sections of docs/language.md from the code they describe.

    python docs/gen_ops_reference.py           rewrite the sections between their markers
    python docs/gen_ops_reference.py --check   exit 1 (and say which) if the committed sections are out of date

Sections (each between `<!-- BEGIN GENERATED <NAME> ... -->` and `<!-- END GENERATED <NAME> -->`):
    OPS    every op of dslc.ops.registry: signature with defaults, aliases, auto-name prefix, op.doc (the shape
           rule), the parameters (kind, default, choices, doc), the weights and examples -- both computed by
           running the op's weights and shape rule on its registry cases, so every shown shape is real.
    TRAIN  the keys of the `train { }` section and its optimiser / schedule / data functions with their defaults
           (dslc/frontend/train_config.py).
    STD    the blocks of the standard library (dslc/std/*.net) with their signatures and leading comments.

tests/frontend/test_language_doc.py fails while the committed text differs from what this script writes, so
adding an op (or a train setting, or a std block) forces a doc update. Output is deterministic.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parent / "language.md"

CATEGORY_ORDER = ("layer", "activation", "elementwise", "shape", "source", "loss")
CATEGORY_TITLES = {
    "layer": "Layers", "activation": "Activations", "elementwise": "Elementwise arithmetic",
    "shape": "Shape manipulation and reductions", "source": "Sources (no tensor input)",
    "loss": "Losses (train section only)",
}
OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}  # `a + b` makes an add node
KIND_TEXT = {
    "int": "integer", "float": "number", "bool": "`true` / `false`", "str": "string",
    "int2": "integer or `[h, w]`", "ints": "integer or list of integers",
    "padding": 'integer, list of integers, `"same"` or `"valid"`', "shape": "list of integers",
    "choice": "one of", "any": "any value",
}
# What each train function does, in a line (train_config.py holds only names and defaults).
TRAIN_NOTES = {
    "sgd": "stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay",
    "adam": "Adam (Kingma & Ba); `weight_decay` adds an L2 term to the gradient",
    "adamw": "Adam with decoupled weight decay (Loshchilov & Hutter)",
    "lbfgs": "full-batch L-BFGS with a strong-Wolfe line search (torch.optim.LBFGS's algorithm): up to `max_iter` "
             "iterations per epoch",
    "levenberg_marquardt": "full-batch Levenberg-Marquardt for `mse` losses (trainlm's damping rule): one accepted "
                           "step per epoch",
    "constant": "the learning rate stays at the optimiser's `lr`",
    "step": "multiply the learning rate by `gamma` every `step_size` epochs, after `warmup` epochs of linear warm-up",
    "cosine": "half a cosine from `lr` down to `min_lr` over the epochs after `warmup` epochs of linear warm-up",
    "linear2d": "`n` 2-D points in two linearly separable classes (labels 0/1)",
    "nonseparable2d": "`n` 2-D points, positive inside the Rosenbrock valley: not linearly separable (labels 0/1)",
    "rosenbrock": "regression of the Rosenbrock function on [-1, 1]^2 (standardised targets)",
    "sinxsiny": "regression of sin(x) sin(y) on [-extent, extent]^2",
    "mnist": "MNIST IDX files from `dir` (default: the data directory); `train` images to train on when only "
             "the t10k files are present",
    "npz": "arrays `x` / `y` (or `x_train`, `y_train`, `x_test`, `y_test`) of an `.npz` file; needs `path`",
    "csv": "a numeric CSV file (optional header row); column `target` (index or name) is the label; needs `path`",
    "adding": "the adding problem: `length` steps of (value, marker); the target is the sum of the two marked "
              "values (predicting the mean scores 1/6)",
    "copy": "the copy task: `symbols` tokens, `delay` blanks, a go marker, then the tokens to repeat (one-hot "
            "inputs, class-id targets per step)",
    "text": "character-level next-token windows of `seq_len` from a UTF-8 file (default: the corpus shipped with "
            "dslc, its own documentation)",
}
KEY_TEXT = {
    "optimizer": "an optimiser call", "schedule": "a schedule call", "data": "a data call",
    "positive int": "positive integer", "non-negative int": "non-negative integer", "int": "integer",
    "positive number": "positive number",
    "fraction": "number in [0, 1)", "bool": "`true` / `false`",
}
KEY_NOTES = {
    "optimizer": "how the weights are updated", "schedule": "how the learning rate changes over training",
    "data": "where the training samples come from (otherwise given to `dslc train`)",
    "epochs": "passes over the training data", "batch_size": "samples per step", "seed": "seed of weight "
    "initialisation, shuffling and dropout", "clip": "clip the global gradient norm to this value",
    "val_split": "fraction of the training data held out for validation", "metric": "reported after each epoch",
    "shuffle": "reshuffle the training data every epoch", "checkpoint_every": "save a checkpoint every N training "
    "steps (0: only when training stops)",
}


# ---- values in .net syntax ------------------------------------------------------------------------------------
def net_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(net_literal(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _optional(default) -> bool:
    return default is None


# ---- ops ------------------------------------------------------------------------------------------------------
def ops_in_order():
    from dslc.ops import registry
    ops = list(registry.all_ops().values())
    cats = list(CATEGORY_ORDER) + sorted({o.category for o in ops} - set(CATEGORY_ORDER))
    return [o for c in cats for o in ops if o.category == c]


def aliases_of(op) -> list[str]:
    from dslc.ops import registry
    return sorted(a for a, target in registry.ALIASES.items() if target == op.name)


def input_names(op) -> list[str]:
    return ["[x1, x2, ...]"] if op.variadic else list(op.inputs)


def signature(op) -> str:
    from dslc.ops.registry import REQUIRED
    parts = input_names(op)
    for p in op.params:
        if p.default is REQUIRED:
            parts.append(p.name)
        elif _optional(p.default):
            parts.append(f"{p.name}?")
        else:
            parts.append(f"{p.name}={net_literal(p.default)}")
    return f"{op.name}({', '.join(parts)})"


@dataclass
class Example:
    """One registry case of an op, written as .net: input declarations, one statement, the output types."""
    inputs: list  # (name, TensorType)
    statement: str
    outputs: list  # TensorType, one per output
    note: str
    loss: bool


def _call_args(op, attrs: dict) -> str:
    from dslc.ops.registry import REQUIRED
    required = [p for p in op.params if p.default is REQUIRED]
    positional = []
    if len(required) <= 2:
        for p in op.params:
            if p.default is REQUIRED and p.name in attrs:
                positional.append(p.name)
            else:
                break
    parts = [net_literal(attrs[n]) for n in positional]
    parts += [f"{p.name}={net_literal(attrs[p.name])}" for p in op.params
              if p.name in attrs and p.name not in positional]
    return ", ".join(parts)


def example_of(op, case) -> Example:
    from dslc.ops.registry import resolve_attrs
    ins = list(case.inputs)
    outs = op.infer(ins, resolve_attrs(op, ins, dict(case.attrs)))
    args = _call_args(op, case.attrs)
    if op.variadic:
        names = [f"x{i + 1}" for i in range(len(ins))]
        call = f"{op.name}([{', '.join(names)}]{', ' + args if args else ''})"
    elif len(ins) == 1:
        names = list(op.inputs)
        call = f"{names[0]} |> {op.name}" + (f"({args})" if args else "")
    elif op.name in OPERATORS and len(ins) == 2 and not args:
        names = list(op.inputs)
        call = f"{names[0]} {OPERATORS[op.name]} {names[1]}"
    else:
        names = list(op.inputs)
        call = f"{op.name}({', '.join(names + ([args] if args else []))})"
    if op.category == "loss":
        lhs = "loss"
    elif len(outs) == 1:
        lhs = "y"
    else:
        lhs = ", ".join(f"y{i + 1}" for i in range(len(outs)))
    return Example(list(zip(names, ins)), f"{lhs} = {call}", outs, case.note, op.category == "loss")


def examples(op) -> list[Example]:
    """The first registry case, and the first case with a symbolic dim when there is one (at most 2)."""
    cases = list(op.cases)
    if not cases:
        return []
    chosen = [cases[0]]
    symbolic = next((c for c in cases[1:] if any(not t.is_concrete() for t in c.inputs)), None)
    if symbolic is not None and all(t.is_concrete() for t in cases[0].inputs):
        chosen.append(symbolic)
    return [example_of(op, c) for c in chosen]


def _weights_text(op) -> str:
    from dslc.ops.registry import resolve_attrs
    case = next((c for c in op.cases if all(t.is_concrete() for t in c.inputs)), op.cases[0] if op.cases else None)
    if case is None:
        return "Weights: none."
    ins = list(case.inputs)
    ws = op.weights(ins, resolve_attrs(op, ins, dict(case.attrs)))
    if not ws:
        return "Weights: none."
    items = []
    for key, spec in ws.items():
        init = "fan-in (He / Xavier) init" if spec.init == "fan_in" else f"init {spec.init}"
        extra = ", not trained (running statistic)" if not spec.trainable else ""
        items.append(f"`{key}` {list(spec.shape)} ({init}{extra})")
    return (f"Weights, shown for the first example below (named `<node>.<key>`): " + ", ".join(items) + ".")


def _param_rows(op) -> list[str]:
    from dslc.ops.registry import REQUIRED
    rows = []
    for name in input_names(op):
        what = "list of tensors" if op.variadic else "tensor input"
        rows.append(f"| `{name.lstrip('*')}` | {what} | | |")
    for p in op.params:
        kind = KIND_TEXT[p.kind]
        if p.kind == "choice":
            kind += " " + ", ".join(f"`{net_literal(c)}`" for c in p.choices)
        if p.default is REQUIRED:
            default = "required"
        elif _optional(p.default):
            default = "not set"
        else:
            default = f"`{net_literal(p.default)}`"
        rows.append(f"| `{p.name}` | {kind} | {default} | {p.doc} |")
    return rows


def render_op(op) -> str:
    lines = [f"### `{op.name}`", ""]
    meta = [f"`{signature(op)}`", f"category {op.category}", f"auto names `{op.short}1`, `{op.short}2`, ..."]
    if op.name in OPERATORS:
        meta.append(f"operator `a {OPERATORS[op.name]} b`")
    al = aliases_of(op)
    if al:
        meta.append("also called " + ", ".join(f"`{a}`" for a in al))
    lines += [" · ".join(meta), "", op.doc, ""]
    lines += ["| argument | kind | default | meaning |", "|---|---|---|---|"] + _param_rows(op) + [""]
    lines += [_weights_text(op), ""]
    exs = examples(op)
    if exs:
        lines += ["```", *_example_lines(exs), "```", ""]
    return "\n".join(lines)


def _example_lines(exs: list[Example]) -> list[str]:
    out = []
    for i, ex in enumerate(exs):
        if i:
            out.append("")
        decl = ", ".join(f"{n}: {t}" for n, t in ex.inputs)
        head = f"# {decl}" if decl else "# (no inputs)"
        if ex.note:
            head += f"  ({ex.note})"
        out.append(head)
        outs = ", ".join(str(t) for t in ex.outputs)
        out.append(f"{ex.statement}    # -> {outs}")
    return out


def render_ops() -> str:
    ops = ops_in_order()
    lines = ["Every op the compiler knows, generated from the op registry (`dslc/ops/*.py`). In a signature,",
             "names before the first `=` without a default are required, `name?` is optional with no default, and",
             "tensor inputs come first (or arrive through `|>`). Example shapes are computed by the op's shape",
             "rule.", "",
             "| op | category | auto names | signature |", "|---|---|---|---|"]
    for op in ops:
        lines.append(f"| [`{op.name}`](#{op.name}) | {op.category} | `{op.short}1`, `{op.short}2`, ... "
                     f"| `{signature(op)}` |")
    lines.append("")
    current = None
    for op in ops:
        if op.category != current:
            current = op.category
            lines += [f"## Ops: {CATEGORY_TITLES.get(current, current)}", ""]
        lines.append(render_op(op))
    return "\n".join(lines).rstrip() + "\n"


# ---- train section -------------------------------------------------------------------------------------------
def _train_default(v) -> str:
    if v is None:
        return "not set"
    if isinstance(v, dict):
        from dslc.frontend.train_config import TRAIN_FUNCTIONS
        name = v.get("name")
        defaults = TRAIN_FUNCTIONS.get(name, (None, {}))[1]
        given = [f"{k}={net_literal(x)}" for k, x in v.items() if k not in ("name", "kind") and defaults.get(k) != x]
        return f"`{name}({', '.join(given)})`"
    return f"`{net_literal(v)}`"


def render_train() -> str:
    from dslc.frontend.train_config import DEFAULTS, KEYS, METRICS, TRAIN_FUNCTIONS
    lines = ["| setting | value | default | meaning |", "|---|---|---|---|",
             "| `loss` | scalar tensor expression | required | what training minimises |"]
    for key, kind in KEYS.items():
        if kind == "metric":
            text = "one of " + ", ".join(f"`{net_literal(m)}`" for m in METRICS)
        else:
            text = KEY_TEXT.get(kind, kind)
        lines.append(f"| `{key}` | {text} | {_train_default(DEFAULTS.get(key))} | {KEY_NOTES.get(key, '')} |")
    lines += ["", "| function | for | parameters | what it is |", "|---|---|---|---|"]
    for name, (kind, params) in TRAIN_FUNCTIONS.items():
        ps = ", ".join(f"{k}?" if v is None else f"{k}={net_literal(v)}" for k, v in params.items())
        lines.append(f"| `{name}` | `{kind}` | `{name}({ps})` | {TRAIN_NOTES.get(name, '')} |")
    return "\n".join(lines) + "\n"


# ---- standard library ------------------------------------------------------------------------------------------
def _std_blocks(text: str) -> list[tuple[str, str]]:
    """(signature, comment) for each `block` of a std file, the comment being the `#` lines just above it."""
    out = []
    lines = text.splitlines()
    for m in re.finditer(r"^block\s+(\w+)\s*\(", text, re.M):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        params = " ".join(text[m.end():i - 1].split())
        line_no = text.count("\n", 0, m.start())
        comment = []
        j = line_no - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            comment.insert(0, lines[j].lstrip()[1:].strip())
            j -= 1
        out.append((f"{m.group(1)}({params})", " ".join(comment)))
    return out


def render_std() -> str:
    from dslc.frontend.modules import std_dir, std_modules
    from dslc.frontend.parser import parse
    lines = []
    for name in std_modules():
        path = std_dir() / f"{name}.net"
        text = path.read_text()
        doc = " ".join(parse(text, str(path)).doc.split())
        lines += [f"### `import std.{name}`", "", doc, "", "| block | what it does |", "|---|---|"]
        for sig, comment in _std_blocks(text):
            lines.append(f"| `{sig}` | {comment} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---- markers ---------------------------------------------------------------------------------------------------
SECTIONS = {"OPS": render_ops, "TRAIN": render_train, "STD": render_std}


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name} (docs/gen_ops_reference.py writes this part; do not edit by hand) -->"


def end_marker(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def split_section(text: str, name: str) -> tuple[str, str, str]:
    b, e = begin_marker(name), end_marker(name)
    if text.count(b) != 1 or text.count(e) != 1:
        raise SystemExit(f"{DOC}: expected exactly one `{b}` and one `{e}`")
    head, rest = text.split(b, 1)
    body, tail = rest.split(e, 1)
    return head + b, body, e + tail


def regenerate(text: str) -> str:
    for name, render in SECTIONS.items():
        head, _, tail = split_section(text, name)
        text = f"{head}\n\n{render()}\n{tail}"
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/language.md is out of date")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    new = regenerate(text)
    if args.check:
        if new != text:
            stale = [n for n in SECTIONS if split_section(new, n)[1] != split_section(text, n)[1]]
            print(f"{DOC} is out of date ({', '.join(stale)}): run python docs/gen_ops_reference.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
