"""A numpy graph-walking executor with reverse-mode autodiff over the IR graph (dslc/ir.py).

The graph is turned once into a *plan*: a flat list of steps in topological order, each holding the op's
`forward` and `vjp` functions (dslc/ops/registry.py contract), the integer slots of its inputs and outputs in a
value table, references to its weight arrays and its attrs. The step loop then only indexes lists: no graph
queries, no dict look-ups by node name.

    forward:  values[out_slots] = forward(ctx, [values[s] for s in in_slots], ws, attrs)
    backward: walk the steps in reverse; gradients of a tensor that fans out (skip connections, x + x) are
              summed (micrograd's `+=`); weight gradients land in a dict name -> float32 array.

Only steps needed for the requested results run: the loss and what it depends on when training, the model's
outputs (and the loss when targets are given) when evaluating. Backward visits only the steps that lie between a
trainable weight and the loss. Weights are a dict `f"{node}.{key}" -> float32 array` (dslc.weights.init_weights);
optimisers update them in place, so the plan's references stay valid (`set_weights` copies into them).

Lanes: for dense networks with a large linear weight, each such weight is cut into two column blocks, each
owned by one of two threads for its forward product, weight gradient and Adam update (dslc/train/lanes.py).

Batch-parallel steps: for convolutional graphs whose ops never mix samples (`batch_separable`: no batchnorm, no
dropout, losses that are means), a training step runs the two halves of the batch on two threads with BLAS held
at one thread, and averages the halves' losses and gradients (see docs/training.md, BENCHMARKS.md).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import networkx as nx
import numpy as np

from dslc import ir
from dslc.kernels.context import ExecContext
from dslc.ops import registry
from dslc.types import NUMPY_DTYPE

F32 = np.float32


class ExecutorError(Exception):
    """A problem running the graph (missing forward/vjp, bad feed); the message is meant for the user."""


_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Keep freed numpy buffers in the process (glibc only; once per process; DSLC_MALLOC_TUNE=0 turns it off).

    A training step allocates and frees the same large arrays (im2col columns, activations, gradients) every
    step. glibc serves blocks above its mmap threshold with fresh mmap()s and trims freed heap tops back to the
    kernel, so every step page-faults its buffers in again, zero-filled by the kernel: measured on LeNet-5,
    530,000 page faults per epoch and a third of the step time in the kernel. Raising the mmap threshold to its
    maximum (32 MiB) and the trim threshold keeps those buffers in the heap for reuse (the same effect as
    PyTorch's caching CPU allocator). Memory stays bounded by the peak the training step needs."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if os.environ.get("DSLC_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1
    ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 and ok
    mallopt(M_TOP_PAD, 16 << 20)
    _MALLOC_TUNED = ok
    return ok


@dataclass
class Step:
    node: str
    op: str
    forward: Callable
    vjp: Callable | None
    in_slots: tuple[int, ...]
    out_slots: tuple[int, ...]
    ws: dict[str, np.ndarray]               # key -> array (the shared weights dict's arrays, updated in place)
    grad_names: dict[str, str]              # trainable key -> full weight name
    attrs: dict
    needs_input_grad: tuple[bool, ...] = ()  # per input slot: does anything upstream want this gradient?
    backward: bool = False                  # run this step's vjp in the backward pass
    keep_inputs: bool = True                # keep the input arrays for the vjp (else shape-only stand-ins)


@dataclass
class Plan:
    """What one run (train step or evaluation) executes, computed once per graph and purpose."""
    steps: list[Step]
    n_slots: int
    feed_slots: list[tuple[str, int, np.dtype, tuple]]   # (input name, slot, numpy dtype, declared shape)
    target_slots: list[tuple[str, int, np.dtype, tuple]]
    output_slots: dict[str, int]
    loss_slot: int | None
    loss_input_slots: tuple[int, ...] = ()                    # the loss node's operands (prediction, target)


class Executor:
    """Runs a graph (forward, and backward to the loss) on numpy arrays.

    `weights` is updated in place by optimisers; `set_weights` copies new values into the same arrays. The
    executor keeps two contexts: training (dropout on, batchnorm uses and updates batch statistics) and
    evaluation. All randomness comes from `rng` (a numpy Generator, seeded), whose state checkpoints save.
    `workers`: threads (default: dslc.train.parallel.thread_budget()); `lanes=False` keeps dense networks off
    the two lanes (dslc/train/lanes.py), with multi-threaded BLAS instead (for comparisons).
    """

    def __init__(self, g: nx.DiGraph, weights: dict[str, np.ndarray] | None = None, seed: int = 0,
                 rng: np.random.Generator | None = None, workers: int | None = None, lanes: bool | None = None):
        from dslc import weights as W
        tune_malloc()
        self.g = g
        if weights is None:
            weights = W.init_weights(g, seed)
        problems = W.check_weights(g, weights)
        if problems:
            raise ExecutorError("the weights do not fit the network: " + "; ".join(problems[:5]))
        self.weights = {k: np.ascontiguousarray(v, dtype=F32) if v.dtype != F32 or not v.flags.c_contiguous
                        else v for k, v in weights.items()}
        # A linear layer's weight W [out, in] is kept column-major (the memory of a row-major W^T): the forward
        # x W^T is then OpenBLAS's plain NN product and the weight gradient is written as (x^T gy)^T, both
        # its fast cases (784-256 MLP, 1 thread: 0.34 -> 0.27 ms forward; 2 threads: weight gradient
        # 0.16-0.33 -> 0.14 ms). The values and the shape are the same; exported or saved weights are too.
        # Likewise an ungrouped conv2d weight [O, C, KH, KW] is kept in (KH, KW, C, O) memory order
        # (dslc.kernels.conv.kernel_major): the column-ordered weight matrix of its GEMMs is then a view and its
        # gradient is written in place of one, instead of two transposed copies a step (ResNet-18's 512-channel
        # 3x3 weights, 1 thread: ~14 ms forward, ~30 ms for the gradient, per layer).
        from dslc.kernels.conv import kernel_major
        for n in g:
            op = g.nodes[n]["op"]
            k = f"{n}.weight"
            if k not in self.weights:
                continue
            if op == "linear" and self.weights[k].ndim == 2:
                self.weights[k] = np.asfortranarray(self.weights[k])
            elif op == "conv2d" and g.nodes[n]["attrs"].get("groups") == 1 and self.weights[k].ndim == 4:
                self.weights[k] = kernel_major(self.weights[k])
        self.trainable = [name for name, _n, spec in ir.weight_names(g) if spec.trainable]
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.train_ctx = ExecContext(True, self.rng)
        self.eval_ctx = ExecContext(False, self.rng)
        self._plans: dict[tuple, Plan] = {}
        from dslc.train.parallel import can_control_blas, thread_budget
        # batch-parallel steps (two halves on two threads) where the graph allows it and BLAS can be held to one
        # thread meanwhile; workers=1 keeps every step in one piece
        self.workers = (thread_budget() if workers is None else max(1, int(workers))) if can_control_blas() else 1
        self._split_ok: bool | None = None
        self._lanes_ok: bool | None = False if lanes is False else None   # lanes=False: never (benchmarks)
        self._lanes_wanted = lanes is not False
        self.split_parts = 2
        self._half_ctx = None
        self._gbuf: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- weights
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy values into the executor's arrays (the plan and optimiser keep their references)."""
        for k, arr in self.weights.items():
            if k in weights:
                np.copyto(arr, np.asarray(weights[k], dtype=F32).reshape(arr.shape))

    # ---------------------------------------------------------------- planning
    def plan(self, purpose: str) -> Plan:
        """purpose: "train" (loss + backward; outputs too), "eval" (outputs and loss), "infer" (outputs only)."""
        p = self._plans.get(purpose)
        if p is None:
            p = self._plans[purpose] = self._build_plan(purpose)
        return p

    def _build_plan(self, purpose: str) -> Plan:
        g = self.g
        loss = g.graph.get("loss")
        if purpose == "train" and loss is None:
            raise ExecutorError(f"network `{g.graph.get('name')}` has no loss: add a `train {{ ... loss = ... }}` "
                                f"section to train it")
        order = list(nx.topological_sort(g))
        slots: dict[tuple[str, int], int] = {}
        for n in order:
            for j in range(len(g.nodes[n]["outputs"])):
                slots[(n, j)] = len(slots)
        outputs = dict(g.graph.get("outputs") or {})
        wanted: set[str] = {src for src, _ in outputs.values()}
        use_loss = loss is not None and purpose in ("train", "eval")
        if use_loss:
            wanted.add(loss[0])
        needed = set(wanted)
        for n in wanted:
            needed |= nx.ancestors(g, n)
        # gradient flow: nodes downstream of a trainable weight and upstream of the loss
        grad_src: set[str] = set()
        if purpose == "train":
            for n in order:
                nd = g.nodes[n]
                if any(s.trainable for s in nd["weights"].values()):
                    grad_src.add(n)
            down: set[str] = set()
            for n in grad_src:
                down.add(n)
                down |= nx.descendants(g, n)
            up = nx.ancestors(g, loss[0]) | {loss[0]}
            flows = down & up
        else:
            flows = set()
        steps = []
        for n in order:
            nd = g.nodes[n]
            if nd["op"] == "input" or n not in needed:
                continue
            if not use_loss and nd.get("role") == "loss":
                continue
            op = registry.get(nd["op"])
            if op is None:
                raise ExecutorError(f"node `{n}`: unknown op `{nd['op']}`")
            if op.forward is None:
                raise ExecutorError(f"op `{op.name}` (node `{n}`) has no numpy forward yet, so it cannot be executed")
            back = n in flows
            if back and op.vjp is None:
                raise ExecutorError(f"op `{op.name}` (node `{n}`) has no gradient (vjp) yet, so it cannot be trained")
            forward, vjp = op.forward, op.vjp
            if op.name == "linear" and self._uses_lanes():   # the one place lanes enter a plan
                from dslc.kernels.split_dense import lane_linear
                forward, vjp = lane_linear(forward, vjp)
            ws = {key: self.weights[f"{n}.{key}"] for key in nd["weights"]}
            grad_names = {key: f"{n}.{key}" for key, spec in nd["weights"].items() if spec.trainable}
            in_slots = tuple(slots[(src, idx)] for src, idx in nd["inputs"])
            needs = tuple(src in flows for src, _ in nd["inputs"])
            steps.append(Step(n, op.name, forward, vjp, in_slots,
                              tuple(slots[(n, j)] for j in range(len(nd["outputs"]))), ws, grad_names,
                              dict(nd["attrs"]), needs, back, op.vjp_reads_inputs))

        def feed(names):
            out = []
            for name in names:
                t = g.nodes[name]["outputs"][0]
                out.append((name, slots[(name, 0)], np.dtype(NUMPY_DTYPE[t.dtype]), tuple(t.shape)))
            return out
        return Plan(
            steps=steps, n_slots=len(slots),
            feed_slots=feed(g.graph.get("inputs") or []),
            target_slots=feed(g.graph.get("targets") or []) if use_loss else [],
            output_slots={name: slots[o] for name, o in outputs.items()},
            loss_slot=slots[tuple(loss)] if use_loss else None,
            loss_input_slots=tuple(slots[tuple(i)] for i in g.nodes[loss[0]]["inputs"]) if use_loss else (),
        )

    # ---------------------------------------------------------------- running
    @staticmethod
    def _given(specs, given, what: str) -> list:
        """The values for `specs` (feed or target slots), in order, from a dict by name, a list or one array."""
        if given is None:
            given = []
        elif isinstance(given, np.ndarray):
            given = [given]
        if isinstance(given, dict):
            missing = [name for name, *_ in specs if name not in given]
            if missing:
                raise ExecutorError(f"no value given for {what} `{missing[0]}`")
            return [given[name] for name, *_ in specs]
        given = list(given)
        if len(given) < len(specs):
            raise ExecutorError(f"expected {len(specs)} {what}(s) "
                                f"({', '.join(s[0] for s in specs)}), got {len(given)}")
        return given[:len(specs)]

    def _load_feeds(self, plan: Plan, values: list, inputs, targets) -> None:
        for specs, given, what in ((plan.feed_slots, inputs, "input"), (plan.target_slots, targets, "target")):
            for (name, slot, dtype, shape), arr in zip(specs, self._given(specs, given, what)):
                arr = np.asarray(arr)
                if arr.dtype != dtype:
                    arr = arr.astype(dtype)
                if arr.ndim != len(shape) or any(isinstance(d, int) and d != a for d, a in zip(shape, arr.shape)):
                    raise ExecutorError(f"{what} `{name}` expects shape [{', '.join(str(d) for d in shape)}], "
                                        f"got {list(arr.shape)}")
                values[slot] = arr

    def _forward(self, plan: Plan, ctx, inputs, targets, keep: bool):
        """Returns (values by slot, saved per step for the backward pass or None)."""
        values: list[Any] = [None] * plan.n_slots
        self._load_feeds(plan, values, inputs, targets)
        saved: list[Any] = [None] * len(plan.steps) if keep else None
        for i, st in enumerate(plan.steps):
            xs = [values[s] for s in st.in_slots]
            ys, sv = st.forward(ctx, xs, st.ws, st.attrs)
            for s, y in zip(st.out_slots, ys):
                values[s] = y
            if keep and st.backward:   # inputs the vjp never reads are not kept alive (Op.vjp_reads_inputs)
                saved[i] = (xs if st.keep_inputs else [registry.stand_in(x) for x in xs], sv)
        return values, saved

    def forward(self, inputs, targets=None, training: bool = False) -> dict[str, np.ndarray]:
        """Run the model (and the loss, when targets are given). Returns {output name: array, "loss": scalar}."""
        purpose = "eval" if targets is not None and self.g.graph.get("loss") is not None else "infer"
        plan = self.plan(purpose)
        ctx = self.train_ctx if training else self.eval_ctx
        with self._lanes(ctx):
            values, _ = self._forward(plan, ctx, inputs, targets, keep=False)
        out = {name: values[s] for name, s in plan.output_slots.items()}
        if plan.loss_slot is not None:
            out["loss"] = values[plan.loss_slot]
        return out

    def evaluate(self, inputs, targets) -> tuple[float, list[np.ndarray]]:
        """Evaluation-mode forward to the loss: (loss, [the loss node's operands: prediction, target])."""
        plan = self.plan("eval")
        with self._lanes(self.eval_ctx):
            values, _ = self._forward(plan, self.eval_ctx, inputs, targets, keep=False)
        return float(values[plan.loss_slot]), [values[s] for s in plan.loss_input_slots]

    def loss_and_grads(self, inputs, targets, training: bool = True):
        """One forward + backward pass. Returns (loss: float, aux, grads: dict name -> float32 array), aux being
        the loss node's operands (prediction, target) for metrics.

        Weights that get no gradient (not connected to the loss) get zeros, so optimisers see every trainable
        weight each step."""
        plan = self.plan("train")
        if self.workers > 1 and self._splittable():
            xs = self._given(plan.feed_slots, inputs, "input")
            if xs and len(xs[0]) >= 2 * SPLIT_MIN_ROWS:
                ys = self._given(plan.target_slots, targets, "target")
                return self._loss_and_grads_split(plan, xs, ys, training)
        ctx = self.train_ctx if training else self.eval_ctx
        with self._lanes(ctx):
            return self._backward(plan, ctx, *self._forward(plan, ctx, inputs, targets, keep=True))

    def _backward(self, plan: Plan, ctx, values: list, saved: list, seed: tuple[int, np.ndarray] | None = None):
        """Reverse pass from the loss (gradient 1), or from `seed` = (slot, gradient of that slot): a
        vector-Jacobian product of any tensor the loss depends on (second_order.py's per-sample Jacobians)."""
        loss = values[plan.loss_slot]
        grads_v: list[Any] = [None] * plan.n_slots
        owned = bytearray(plan.n_slots)  # 1 where grads_v[slot] is our own array (safe to add into in place)
        seed_slot, seed_grad = seed if seed is not None else (plan.loss_slot, np.ones(np.shape(loss), F32))
        grads_v[seed_slot] = seed_grad
        owned[seed_slot] = 1
        wgrads: dict[str, np.ndarray] = {}
        steps = plan.steps
        for i in range(len(steps) - 1, -1, -1):
            st = steps[i]
            if not st.backward:
                continue
            gys = [grads_v[s] for s in st.out_slots]
            if all(gy is None for gy in gys):
                continue
            xs, sv = saved[i]
            saved[i] = None
            ctx.needs_input_grad = st.needs_input_grad
            gxs, gws = st.vjp(ctx, gys, sv, xs, st.ws, st.attrs)
            for s in st.out_slots:   # free output gradients as soon as they are consumed
                grads_v[s] = None
            for s, need, gx in zip(st.in_slots, st.needs_input_grad, gxs):
                if gx is None or not need:
                    continue
                if gx.dtype != F32:
                    gx = gx.astype(F32)
                cur = grads_v[s]
                if cur is None:
                    grads_v[s] = gx
                elif owned[s]:
                    if cur.shape == gx.shape:
                        cur += gx
                    else:
                        grads_v[s] = cur + gx
                else:
                    grads_v[s] = cur + gx
                    owned[s] = 1
            if gws:
                for key, name in st.grad_names.items():
                    gw = gws.get(key)
                    if gw is None:
                        continue
                    if gw.dtype != F32:
                        gw = gw.astype(F32)
                    wgrads[name] = gw
        ctx.needs_input_grad = None
        for name in self.trainable:
            if name not in wgrads:
                wgrads[name] = np.zeros_like(self.weights[name])
        return float(loss), [values[s] for s in plan.loss_input_slots], wgrads

    def prediction_jacobian(self, inputs, targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, target, J) of the loss node's first operand: J[i*K + k, :] = d pred[i, k] / d w over the
        trainable weights flattened in `self.trainable` order (row-major each). One evaluation-mode forward and
        K backward passes per sample (batch of one): exact, for Gauss-Newton / Levenberg-Marquardt."""
        plan = self.plan("train")
        xs = self._given(plan.feed_slots, inputs, "input")
        ys = self._given(plan.target_slots, targets, "target")
        pred_slot = plan.loss_input_slots[0]
        n = len(xs[0])
        rows, preds = [], []
        for i in range(n):
            values, saved = self._forward(plan, self.eval_ctx, [a[i:i + 1] for a in xs], [a[i:i + 1] for a in ys],
                                          keep=True)
            p = values[pred_slot]
            preds.append(p.reshape(-1))
            for k in range(p.size):
                e = np.zeros(p.shape, F32)
                e.reshape(-1)[k] = 1.0
                sv = saved if k == p.size - 1 else list(saved)   # the reverse pass frees what it consumes
                _, _, gw = self._backward(plan, self.eval_ctx, values, sv, seed=(pred_slot, e))
                rows.append(np.concatenate([gw[name].reshape(-1) for name in self.trainable]))
        target = np.concatenate([np.asarray(a, F32).reshape(-1) for a in ys[0:1]]) if ys else None
        return np.concatenate(preds), target, np.stack(rows)


    # ------------------------------------------------------------ lane-split dense layers
    def _uses_lanes(self) -> bool:
        """Whether this executor runs large linear layers in two lane-owned halves (dslc/train/lanes.py): with
        two or more threads, where the compiled lane can run, for a dense network (no convolution, attention
        or matmul, whose GEMMs would lose OpenBLAS's second thread: BLAS is held at one meanwhile) with a
        linear weight big enough to cut (dslc.kernels.split_dense.weight_cut). Static (weight shapes only):
        results never depend on timing, and training, evaluation and inference compute the same products."""
        if self._lanes_ok is None:
            from dslc.kernels.split_dense import weight_cut
            from dslc.train.lanes import native_available
            ops = {self.g.nodes[n]["op"] for n in self.g}
            self._lanes_ok = self.workers > 1 and not ops & _OTHER_GEMM_OPS and native_available() and any(
                self.g.nodes[n]["op"] == "linear" and f"{n}.weight" in self.weights
                and weight_cut(self.weights[f"{n}.weight"]) is not None for n in self.g)
        return self._lanes_ok

    def paired_updates(self):
        """The optimiser's two-halves updater for this executor's weights (Optimizer.use_paired_updates): the
        compiled lane's where it runs here and two threads are ours, else None (the optimiser's own helper)."""
        if self.workers < 2 or not self._lanes_wanted:
            return None
        from dslc.train.lanes import native_available, paired_update
        return paired_update if native_available() else None

    @contextlib.contextmanager
    def _lanes(self, ctx):
        """Around a run: BLAS held at one thread and the lane in the context, when this executor uses lanes.
        Evaluation runs this way too: OpenBLAS's second thread would otherwise spin for ~0.1 s after each
        evaluation, on the core the lane's helper needs."""
        if not self._uses_lanes():
            yield
            return
        from dslc.train.lanes import lane
        from dslc.train.parallel import blas_threads
        with blas_threads(1):
            ctx.lanes = lane()
            try:
                yield
            finally:
                ctx.lanes = None

    # ------------------------------------------------------------ batch-parallel training steps
    def _splittable(self) -> bool:
        """Batch-parallel steps pay off where much of the work is outside BLAS (im2col, slab adds, pooling:
        single-threaded numpy); a dense network is a few GEMMs that multi-threaded BLAS already splits well
        (measured: the 784-256-10 MLP takes 0.73 ms per step whole with 2 BLAS threads, 1.12 ms in halves;
        LeNet-5 12.0 ms whole, 7.3 ms in halves). The choice is static, so runs stay reproducible."""
        if self._split_ok is None:
            self._split_ok = batch_separable(self.g) and any(self.g.nodes[n]["op"] in _SPATIAL for n in self.g)
        return self._split_ok

    def _loss_and_grads_split(self, plan: Plan, inputs: list, targets: list, training: bool):
        """The batch in `split_parts` contiguous chunks, run by two threads at once (chunks 0, 2, ... and 1, 3,
        ...), each with single-threaded BLAS; the graph has no op that mixes samples (batch_separable) and every
        loss is a mean over the batch, so the step's loss and gradients are the chunks' averaged with weights
        n_i / n. Smaller chunks also keep each one's intermediates in cache. Deterministic for a batch size."""
        from dslc.train.parallel import run_pair
        from dslc.train.parallel import blas_threads
        xs = [np.asarray(a) for a in inputs]
        ys = [np.asarray(a) for a in targets]
        n = len(xs[0])
        parts = max(2, min(self.split_parts, n // SPLIT_MIN_ROWS))
        bounds = [n * i // parts for i in range(parts + 1)]
        chunks = [([a[lo:hi] for a in xs], [a[lo:hi] for a in ys]) for lo, hi in zip(bounds, bounds[1:])]
        if self._half_ctx is None:
            self._half_ctx = [ExecContext(True, self.rng), ExecContext(True, self.rng)]
        for c in self._half_ctx:
            c.training = training

        def run(t):
            c = self._half_ctx[t]
            return [self._backward(plan, c, *self._forward(plan, c, chunks[k][0], chunks[k][1], keep=True))
                    for k in range(t, parts, 2)]
        with blas_threads(1):
            r1, r0 = run_pair(lambda: run(1), lambda: run(0))
        results = [None] * parts
        results[0::2], results[1::2] = r0, r1
        ws = [(hi - lo) / n for lo, hi in zip(bounds, bounds[1:])]
        loss = sum(r[0] * w for r, w in zip(results, ws))
        aux = [np.concatenate([r[1][i] for r in results]) if np.ndim(results[0][1][i]) else results[0][1][i]
               for i in range(len(results[0][1]))]
        grads = {}
        equal = len(set(ws)) == 1
        for name in results[0][2]:
            buf = self._gbuf.get(name)
            if buf is None:
                buf = self._gbuf[name] = np.empty_like(self.weights[name])
            if equal:
                np.add(results[0][2][name], results[1][2][name], out=buf)
                for r in results[2:]:
                    buf += r[2][name]
                buf *= ws[0]
            else:
                np.multiply(results[0][2][name], ws[0], out=buf)
                for r, w in zip(results[1:], ws[1:]):
                    buf += r[2][name] * w
            grads[name] = buf
        return float(loss), aux, grads


# ops whose every output row depends only on the same rows of its batch operands (given the attrs checked below)
_ROWWISE = {"linear", "conv1d", "conv2d", "conv_transpose2d", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
            "maxpool", "avgpool", "global_avgpool", "adaptive_avgpool", "add", "sub", "mul", "div", "flatten",
            "upsample", "layernorm", "attention", "softmax", "log_softmax"}
_MEAN_LOSSES = {"cross_entropy", "mse", "bce"}
_SPATIAL = {"conv1d", "conv2d", "conv_transpose2d", "maxpool", "avgpool", "global_avgpool", "adaptive_avgpool",
            "upsample"}
SPLIT_MIN_ROWS = 8
# ops with GEMMs of their own that the lanes do not split (a graph with any of them keeps multi-threaded BLAS)
_OTHER_GEMM_OPS = {"conv1d", "conv2d", "conv_transpose2d", "attention", "matmul"}


def batch_separable(g) -> bool:
    """True when splitting a batch into parts and averaging the parts' losses and gradients gives the full
    batch's: every tensor keeps the symbolic batch dim first, every op is row-wise (no batchnorm, no dropout,
    no reduction or reshape across the batch), and the loss is a mean over the batch."""
    inputs = list(g.graph.get("inputs") or []) + list(g.graph.get("targets") or [])
    if not inputs:
        return False
    sym = g.nodes[inputs[0]]["outputs"][0].shape[:1]
    if not sym or not isinstance(sym[0], str):
        return False
    sym = sym[0]
    for n in g:
        nd = g.nodes[n]
        op, attrs = nd["op"], nd["attrs"]
        if op == "input":
            if nd["outputs"][0].shape[:1] != (sym,):
                return False
            continue
        if nd.get("role") == "loss":
            if op not in _MEAN_LOSSES or nd["outputs"][0].shape != ():
                return False
            continue
        if op not in _ROWWISE or any(t.shape[:1] != (sym,) for t in nd["outputs"]):
            return False
        if any(g.nodes[src]["outputs"][i].shape[:1] != (sym,) and g.nodes[src]["op"] != "input"
               for src, i in nd["inputs"]) and op not in ("add", "sub", "mul", "div"):
            return False
        if op in ("softmax", "log_softmax"):
            src, i = nd["inputs"][0]
            if attrs.get("axis", -1) % g.nodes[src]["outputs"][i].rank == 0:
                return False
    return True

