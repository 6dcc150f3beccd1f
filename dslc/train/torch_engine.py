"""The torch engine: a .net network trained as a PyTorch module (dslc.torchgen.build_module), on CPU or CUDA,
optionally in several processes under DistributedDataParallel (dslc/train/torch_distributed.py).

Imported only for `--engine torch` (dslc/train/engines.py checks that torch is installed first). The Trainer
gives every process the same global batch; each process takes its shard (rows rank, rank + world, ...: the
strided split DistributedSampler makes), and scales its shard's mean loss by (shard rows * world / batch rows)
before DDP averages the gradients, so the step is the gradient of the global batch's mean loss even when the
last batch does not divide evenly. The weights start from dslc's own seeded initialisation
(dslc.weights.init_weights) and leave as numpy arrays under dslc's names, so the ONNX export and checkpoints
are the numpy engine's.
"""
from __future__ import annotations

import base64

import numpy as np

from dslc.train.engines import EngineUnavailable, NonFiniteLoss, metric_counts
from dslc.types import NUMPY_DTYPE


def resolve_device(spec: str, local_rank: int | None = None):
    """cpu | cuda | cuda:N | auto (CUDA when torch sees one) -> torch.device; EngineUnavailable when asked for
    CUDA that is not there. Under DDP on CUDA, `cuda`/`auto` mean this process's GPU (cuda:LOCAL_RANK)."""
    import torch
    spec = (spec or "auto").lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EngineUnavailable(f"--device {spec}: torch sees no CUDA device (this torch is "
                                    f"{torch.__version__}); use --device cpu or auto")
        n = torch.cuda.device_count()
        if spec == "cuda":
            idx = local_rank if local_rank is not None else torch.cuda.current_device()
        else:
            try:
                idx = int(spec.split(":", 1)[1])
            except ValueError:
                raise EngineUnavailable(f"--device {spec}: expected cuda:N with N a device number") from None
        if not 0 <= idx < n:
            raise EngineUnavailable(f"--device {spec}: there are {n} CUDA device(s) (0..{n - 1})")
        return torch.device("cuda", idx)
    raise EngineUnavailable(f"unknown device `{spec}` (known: cpu, cuda, cuda:N, auto)")


class TorchEngine:
    name = "torch"

    def __init__(self, g, settings, weights=None, device: str = "auto", amp: bool = False, params_check=None):
        import torch
        from dslc import ir
        from dslc import weights as W
        from dslc.train import torch_distributed as TD
        from dslc.train.optim import OptimizerError
        from dslc.train.torch_optim import TorchOptimizer
        self.torch = torch
        self.g = g
        self.group = TD.current()                  # None: one process
        self.rank, self.world = (self.group.rank, self.group.world) if self.group else (0, 1)
        self.device = resolve_device(device, self.group.local_rank if self.group else None)
        if amp and self.device.type != "cuda":
            raise EngineUnavailable("--amp (bf16 autocast) needs a CUDA device; on the CPU train in float32")
        self.amp = amp
        if self.group:
            TD.init(self.group, self.device)
        if weights is None:
            weights = W.init_weights(g, settings.seed)   # the numpy engine's initial weights, bit for bit
        problems = W.check_weights(g, weights)
        if problems:
            from dslc.train.executor import ExecutorError
            raise ExecutorError("the weights do not fit the network: " + "; ".join(problems[:5]))
        self.net = build_network(g).to(self.device)
        self.set_weights(weights)
        named = dict(self.net.named_parameters())
        trainable = [name for name, _n, spec in ir.weight_names(g) if spec.trainable]
        self.params = {k: named[k] for k in trainable}
        for k, p in named.items():
            p.requires_grad_(k in self.params)
        if params_check is not None:
            params_check(self.params)
        try:
            self.opt = TorchOptimizer(settings.optimizer, self.params)
        except ValueError as e:
            if isinstance(e, OptimizerError):
                raise
            from dslc.train.loop import TrainError
            raise TrainError(str(e)) from None
        self.lr, self.opt_name = self.opt.lr, self.opt.name
        self.loss_of = LossModule(self.net, g)
        self.stepper = self.loss_of
        if self.group:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.stepper = DDP(self.loss_of, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        torch.manual_seed(int(settings.seed) * 1000003 + self.rank)   # dropout masks: one stream per process
        g_in = g.graph.get("inputs") or []
        g_tg = g.graph.get("targets") or []
        self._in_dtypes = [np.dtype(NUMPY_DTYPE[g.nodes[n]["outputs"][0].dtype]) for n in g_in]
        self._tg_dtypes = [np.dtype(NUMPY_DTYPE[g.nodes[n]["outputs"][0].dtype]) for n in g_tg]

    def describe(self) -> str:
        dev = str(self.device)
        if self.device.type == "cuda":
            dev += f" ({self.torch.cuda.get_device_name(self.device)})"
        parts = [f"engine torch {self.torch.__version__} on {dev}"]
        if self.amp:
            parts.append("bf16 autocast")
        if self.group:
            parts.append(f"DDP {self.world} processes ({self.group.backend})")
        return ", ".join(parts)

    # --------------------------------------------------------------------------------------- feeds
    def _tensors(self, arrays, dtypes):
        return [self.torch.from_numpy(np.ascontiguousarray(a, dtype=dt)).to(self.device, non_blocking=True)
                for a, dt in zip(arrays, dtypes)]

    def _autocast(self):
        import contextlib
        if not self.amp:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type="cuda", dtype=self.torch.bfloat16)

    # --------------------------------------------------------------------------------------- steps
    def step(self, xs, ys, lr, clip, metric):
        torch = self.torch
        total = len(xs[0])
        if self.group:
            rows = np.arange(self.rank, total, self.world)
            local = len(rows)
            if local == 0:   # a last batch with fewer rows than processes: a zero-weighted stand-in row
                rows = np.arange(1)
            xs, ys = [x[rows] for x in xs], [y[rows] for y in ys]
            weight = local * self.world / total
        else:
            local, weight = total, 1.0
        self.net.train()
        for p in self.params.values():
            p.grad = None
        with self._autocast():
            loss, pred, target = self.stepper(self._tensors(xs, self._in_dtypes), self._tensors(ys, self._tg_dtypes))
        loss = loss.float()
        (loss * weight if weight != 1.0 else loss).backward()
        a, c = metric_counts(metric, (pred.detach().float().cpu().numpy(), target.detach().cpu().numpy())) \
            if local else (0.0, 0)
        if self.group:
            sums = torch.tensor([float(loss.detach()) * local, a, c], dtype=torch.float64)
            self.group.all_reduce(sums)
            value, a, c = float(sums[0]) / total, float(sums[1]), int(sums[2])
        else:
            value = float(loss.detach())
        if not np.isfinite(value):
            raise NonFiniteLoss(value)
        if clip:
            self._clip(clip)
        self.opt.step(lr)
        return value, total, a, c

    def _clip(self, max_norm: float) -> None:
        """dslc.train.optim.clip_grad_norm on the .grad tensors (global L2 norm, scale max_norm / (norm + 1e-6))."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            return
        norm = float(self.torch.stack([(g.double() * g.double()).sum() for g in grads]).sum().sqrt())
        if max_norm > 0 and norm > max_norm:
            scale = max_norm / (norm + 1e-6)
            for g in grads:
                g.mul_(scale)

    def evaluate(self, xs, ys, metric):
        torch = self.torch
        self.net.eval()
        with torch.no_grad(), self._autocast():
            loss, pred, target = self.loss_of(self._tensors(xs, self._in_dtypes), self._tensors(ys, self._tg_dtypes))
        aux = (pred.float().cpu().numpy(), target.cpu().numpy())
        return (float(loss.float()), len(xs[0]), *metric_counts(metric, aux))

    # --------------------------------------------------------------------------------------- state
    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in self.net.state_dict().items()}

    def set_weights(self, w) -> None:
        torch = self.torch
        sd = self.net.state_dict()
        missing = [k for k in sd if k not in w]
        if missing:
            raise ValueError(f"no value for weight `{missing[0]}`")
        with torch.no_grad():
            for k, t in sd.items():
                t.copy_(torch.from_numpy(np.ascontiguousarray(w[k], dtype=np.float32)).reshape(t.shape))

    def optimizer_state(self):
        return self.opt.state_dict()

    def load_optimizer_state(self, arrays, meta) -> None:
        self.opt.load_state_dict(arrays, meta)

    def rng_state(self):
        state = {"cpu": base64.b64encode(self.torch.get_rng_state().numpy().tobytes()).decode()}
        if self.device.type == "cuda":
            state["cuda"] = base64.b64encode(self.torch.cuda.get_rng_state(self.device).numpy().tobytes()).decode()
        return state

    def load_rng_state(self, state, seed: int, step: int) -> None:
        """The saved generator (a torch checkpoint of this process count), or one seeded by (seed, step, rank)."""
        torch = self.torch

        def tensor(b64):
            return torch.from_numpy(np.frombuffer(base64.b64decode(b64), dtype=np.uint8).copy())
        if state and "cpu" in state and self.world == 1:
            torch.set_rng_state(tensor(state["cpu"]))
            if self.device.type == "cuda" and "cuda" in state:
                torch.cuda.set_rng_state(tensor(state["cuda"]), self.device)
        else:
            torch.manual_seed((int(seed) * 1000003 + int(step)) * 131 + self.rank)

    def close(self) -> None:
        if self.group:
            from dslc.train import torch_distributed as TD
            TD.shutdown()


# ------------------------------------------------------------------------------------------- the module
def build_network(g):
    """The network as a torch.nn.Module whose state_dict keys are dslc's weight names (dslc.torchgen)."""
    try:
        from dslc.torchgen import build_module
    except ImportError as e:
        raise EngineUnavailable(f"this dslc has no torch code generator (dslc.torchgen): {e}") from None
    return build_module(g)


def LossModule(net, g):
    """An nn.Module: forward(inputs, targets) -> (loss, prediction, target) of the train section's loss, what
    Executor.loss_and_grads returns for metrics (DDP wraps this, so the loss is part of its forward)."""
    import torch

    from dslc.torchgen import loss_module
    return loss_module(net, g) if isinstance(net, torch.nn.Module) else None
