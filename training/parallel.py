"""Data-parallel CPU training on torch.distributed: DDP over gloo, one process (one thread) per rank.

Why processes and not torch's intra-op threads: this network's ops are small ([1024, 32] matrices,
a 21-step sequence), so a second OpenMP thread mostly waits on the first -- measured on 2 cores,
two threads took as long per row as one. Ranks each train on their own shard of every batch and
DistributedDataParallel all-reduces the gradients in backward, so every replica takes the same
optimizer step. Each rank scales its loss by its share of the batch's rows, which makes DDP's mean
over ranks the row-weighted mean: with losses that are plain means over rows the step equals one
process on the whole batch (tests check this).

The ranks come from one of two places:

- ``torchrun`` (one or many machines): every process runs the whole job and ``fit`` joins the
  process group torchrun describes (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the environment);
  rank 0 keeps the model, the others follow (``launched_rank``).
- ``workers: N`` without torchrun: ``run_forked`` forks N-1 workers on this machine (they share the
  data pages copy-on-write) and rendezvous through a FileStore in a temporary folder; the caller is
  rank 0 and keeps the trained weights. POSIX only.

Deterministic by seed: every rank seeds its dropout per epoch from (seed, epoch, rank), and gloo
sums the same gradients in the same order, so the same seed and world size give the same weights,
forked or launched by torchrun.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

# How long a rank waits for the others at one collective (a step, or rank 0's validation between
# epochs) before the run is called broken.
TIMEOUT_S = 1800.0
# How long rank 0 waits for its forked workers to exit after the run before killing them.
REAP_GRACE_S = 30.0


class WorkerFailed(RuntimeError):
    """A data-parallel worker process died or broke a collective."""


def can_fork() -> bool:
    """True where forked data-parallel workers are possible (POSIX)."""
    return hasattr(os, "fork") and sys.platform != "win32"


def launched() -> bool:
    """True in a process that torchrun (or another torch.distributed launcher) started with a world of more than one."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_rank() -> int:
    """This process's rank under torchrun; 0 when not launched."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def join_launched_group() -> tuple[int, int, bool]:
    """Join torchrun's gloo process group (env://) unless already in one; (rank, world size, joined here)."""
    import torch.distributed as dist

    joined = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
        joined = True
    return dist.get_rank(), dist.get_world_size(), joined


def leave_group() -> None:
    """Destroy the default process group (no-op without one)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of ``rank`` in ``epoch``: its own dropout masks, the same on every run and launcher."""
    return (seed * 100_003 + epoch) * 1_009 + rank


def wrap(model: Any) -> Any:
    """``model`` in DistributedDataParallel over the default group; its own attributes (``config``, helper heads) stay reachable."""
    from torch.nn.parallel import DistributedDataParallel

    class Replica(DistributedDataParallel):
        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.module, name)

    # Buffers are constants here (no batch norm): syncing them every forward would only cost time.
    # Some parameters go unused for some data (the candidate block's topic and type terms without
    # content tags), and DDP must then be told to look for them, or it waits for their gradients;
    # told so needlessly, it warns on stderr and walks the graph for nothing every step.
    return Replica(model, forward_sync_buffers=False, gradient_as_bucket_view=True, find_unused_parameters=has_unused_parameters(model))


def has_unused_parameters(model: Any) -> bool:
    """Whether some parameters take no part in the loss: the candidate terms' topic and type MLPs when the content has no tags."""
    if getattr(model, "candidates", None) is None:
        return False
    attr = getattr(model, "content_attr", None)
    return attr is None or attr.shape[1] < 2


def all_sum(values: Sequence[float]) -> list[float]:
    """Sum ``values`` over all ranks (float64; every rank gets the same result)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def agree(go_on: bool) -> bool:
    """Rank 0's verdict, broadcast: whether every rank trains another epoch."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if go_on else 0], dtype=torch.int64)
    dist.broadcast(t, 0)
    return bool(t.item())


def run_forked(world: int, body: Callable[[int, int], Any]) -> Any:
    """Run ``body(rank, world)`` in ``world`` processes joined in one gloo group: rank 0 here, the rest forked.

    Returns rank 0's result. A worker that fails makes rank 0's next collective fail, which is
    raised as ``WorkerFailed``; an exception of rank 0's own (Optuna pruning, Ctrl-C) is re-raised
    as is, after the workers are stopped.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        raise RuntimeError("run_forked: this process is already in a torch.distributed group (launched by torchrun?); train with workers=1 there")
    folder = tempfile.mkdtemp(prefix="nba-ddp-")
    store_path = os.path.join(folder, "store")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # forked workers must not touch the parent's OpenMP pool; one thread a rank
    children: list[int] = []
    try:
        for rank in range(1, world):
            pid = os.fork()
            if pid == 0:  # worker: never returns into the caller's stack
                code = 0
                try:
                    _join(store_path, rank, world)
                    body(rank, world)
                    dist.destroy_process_group()
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
        error: BaseException | None = None
        result = None
        try:
            _join(store_path, 0, world)
            result = body(0, world)
        except BaseException as exc:
            error = exc
        finally:
            # Closing rank 0's connections wakes workers still waiting on it; they exit with an error.
            leave_group()
        failed = _reap(children, kill_after=REAP_GRACE_S if error is None else 5.0)
        if error is not None:
            if failed and isinstance(error, RuntimeError):
                raise WorkerFailed(f"data-parallel training worker(s) {failed} failed (traceback above): {error}") from error
            raise error
        if failed:
            raise WorkerFailed(f"data-parallel training worker(s) {failed} exited with an error (traceback above)")
        return result
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)


def _join(store_path: str, rank: int, world: int) -> None:
    import torch.distributed as dist

    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=TIMEOUT_S))


def _reap(children: list[int], kill_after: float) -> list[int]:
    """Wait for the forked workers (SIGKILL those still running after ``kill_after`` s); the pids that did not exit 0."""
    failed = []
    deadline = time.monotonic() + kill_after
    for pid in children:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(pid)
    return failed
