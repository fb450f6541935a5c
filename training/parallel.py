"""Data-parallel training on CPU cores: forked workers, one thread each, gradients averaged in shared memory.

Why not torch's intra-op threads: this network's ops are small ([1024, 32] matrices, a 21-step
sequence), so a second OpenMP thread mostly waits on the first -- measured on 2 cores (another
job running), two threads took as long per row as one. Two processes, each on its own shard of every batch, keep
both cores busy. Every worker holds an identical replica: after each backward pass the workers
write their row-weighted gradients (and loss parts) to one shared buffer, wait at a barrier, and
each sums the buffer in the same order, so every replica takes the same optimizer step and stays
bit-identical without sending weights. With losses that are plain means over rows the result
equals one process on the whole batch (tests check this); same seed and worker count, same model.

POSIX only (fork); the caller is rank 0 and keeps the trained weights. A worker that fails
breaks the barrier, so the others stop with an error instead of waiting forever.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# How long a worker waits for the others at one step before calling the run broken.
BARRIER_TIMEOUT_S = 600.0


class WorkerFailed(RuntimeError):
    """A data-parallel worker process died or broke the gradient barrier."""


def can_fork() -> bool:
    """True where forked data-parallel workers are possible (POSIX)."""
    return hasattr(os, "fork") and sys.platform != "win32"


class GradientExchange:
    """A shared [2, workers, params + parts + 1] buffer (double-buffered by step parity) and a barrier."""

    def __init__(self, params: Sequence[Any], workers: int, n_parts: int) -> None:
        import multiprocessing as mp

        import torch

        self.params = list(params)
        self.workers = workers
        self.n_params = sum(p.numel() for p in self.params)
        self.n_parts = n_parts
        self.buf = torch.zeros(2, workers, self.n_params + n_parts + 1, dtype=torch.float64).share_memory_()
        self.barrier = mp.get_context("fork").Barrier(workers, timeout=BARRIER_TIMEOUT_S)
        self.step = 0

    def average(self, rank: int, rows: int, parts: Sequence[float]) -> tuple[list[float], int]:
        """Replace every ``.grad`` by the row-weighted mean over workers; the row-weighted mean ``parts`` and the rows of all workers."""
        import threading

        import torch

        row = self.buf[self.step % 2, rank]
        offset = 0
        for p in self.params:
            n = p.numel()
            if p.grad is None or rows == 0:
                row[offset : offset + n].zero_()
            else:
                row[offset : offset + n].copy_(p.grad.reshape(-1).to(torch.float64)).mul_(rows)
            offset += n
        row[offset : offset + self.n_parts] = torch.tensor([float(v) * rows for v in parts], dtype=torch.float64)
        row[-1] = float(rows)
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            raise WorkerFailed("a data-parallel training worker failed or timed out (see its traceback above)") from None
        # Every worker sums the same rows in the same order: identical gradients, identical steps.
        total = self.buf[self.step % 2].sum(0)
        self.step += 1
        weight = max(float(total[-1]), 1.0)
        offset = 0
        for p in self.params:
            n = p.numel()
            mean = (total[offset : offset + n] / weight).to(p.dtype).view_as(p)
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
            offset += n
        return [float(v) / weight for v in total[offset : offset + self.n_parts]], int(total[-1])

    def abort(self) -> None:
        """Break the barrier so the other workers stop waiting."""
        self.barrier.abort()


def run_workers(workers: int, body: Callable[[int], None], exchange: GradientExchange) -> None:
    """Run ``body(rank)`` in ``workers`` processes (rank 0 here, the rest forked); raise if any fails."""
    import torch

    children: list[int] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # forked workers must not touch the parent's OpenMP pool
    try:
        for rank in range(1, workers):
            pid = os.fork()
            if pid == 0:  # worker: never returns into the caller's stack
                code = 0
                try:
                    torch.manual_seed(torch.initial_seed() + rank)  # its own dropout masks
                    body(rank)
                except BaseException:
                    traceback.print_exc()
                    exchange.abort()
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
        try:
            body(0)
        except BaseException:
            exchange.abort()
            raise
        finally:
            failed = []
            for pid in children:
                _, status = os.waitpid(pid, 0)
                if os.waitstatus_to_exitcode(status) != 0:
                    failed.append(pid)
        if failed:
            raise WorkerFailed(f"data-parallel training worker(s) {failed} exited with an error (traceback above)")
    finally:
        torch.set_num_threads(threads)
