"""Process groups for the torch engine: `dslc train --engine torch --nproc N`, or the same command under
`torchrun --nproc_per_node N` (both set torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). gloo on the CPU, NCCL on CUDA.

--nproc N starts N copies of the same `dslc train` command line (without --nproc) with that environment, which
is exactly what torchrun does: one code path for both launches. Rank 0's output is the command's output; the
exit code is the first non-zero one of the processes.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass
class Group:
    rank: int
    world: int
    local_rank: int
    backend: str = "gloo"

    def all_reduce(self, tensor) -> None:
        """Sum `tensor` (a CPU float64 tensor) over the processes, in place. NCCL needs it on the GPU."""
        import torch.distributed as dist
        if self.backend == "nccl":
            t = tensor.to(f"cuda:{self.local_rank}")
            dist.all_reduce(t)
            tensor.copy_(t.cpu())
        else:
            dist.all_reduce(tensor)


def current() -> Group | None:
    """The group this process belongs to (torchrun's environment), or None for a single process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None
    if world <= 1 or "RANK" not in os.environ:
        return None
    return Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def init(group: Group, device) -> None:
    import torch.distributed as dist
    group.backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(group.backend, rank=group.rank, world_size=group.world)


def shutdown() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, command: list[str] | None = None) -> int:
    """Run `dslc <argv>` (or `command + argv`) in `nproc` processes (torchrun's environment); returns the exit
    code."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        # ranks > 0 print nothing of their own but errors (the Trainer keeps them quiet)
        procs.append(subprocess.Popen([*(command or [sys.executable, "-m", "dslc.cli"]), *argv], env=env,
                                      stdout=None if rank == 0 else subprocess.DEVNULL))
    try:
        while True:   # a process that fails leaves the others waiting in a collective: stop them
            codes = [p.poll() for p in procs]
            failed = next((c for c in codes if c not in (None, 0)), None)
            if failed is not None:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    p.wait()
                return failed
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.05)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        return 130
