"""Independent CPU work side by side: one item per torch thread, each item single-threaded.

The batched solvers' products are small (a few MFLOP each), and torch's intra-op threads split
them with much overhead: on 2 cores, two batches of probes solved side by side with one thread
each use ~25% fewer CPU seconds than one batch after the other on two threads
(``benchmarks/README.md``, "`--scaling`"). On a GPU there is one worker: the device already runs
a batch in parallel.

Side by side means threads, or with ``processes=True`` forked worker processes where the
platform forks (Linux). A solve is thousands of small torch calls, and each holds Python's
interpreter lock while it is dispatched, so two threads also wait on each other: at 200 training
rows two threads spent ~20% more CPU seconds than one thread alone, two processes ~4%
(``benchmarks/README.md``). A forked worker inherits the inputs (nothing is copied in) and sends its
result back pickled, so processes suit work whose results are small next to its compute.
"""

from __future__ import annotations

import multiprocessing
import threading
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_JOB: tuple[Callable, list] | None = None  # what forked workers run: set just before they fork
_FORK = threading.Lock()  # one job is handed to forked workers at a time


def cpu_workers(device: torch.device, n_items: int) -> int:
    """How many items to run at once: one per torch thread on a CPU (at most ``n_items``), else 1."""
    return 1 if device.type != "cpu" else max(1, min(torch.get_num_threads(), n_items))


def side_by_side(
    fn: Callable[[T], R], items: Iterable[T], workers: int, *, processes: bool = False
) -> list[R]:
    """``[fn(item) for item in items]``, ``workers`` at a time with torch single-threaded meanwhile.

    ``processes``: in forked processes where the platform can fork (else threads, as without it);
    ``fn``'s results must then pickle. In threads torch's thread count, which is process-wide, is 1
    while the items run and restored afterwards, exceptions included. Results come back in the
    order of ``items``; an exception in an item is raised here.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    if processes and can_fork():
        return _in_processes(fn, items, workers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="probekit") as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)


def can_fork() -> bool:
    """Whether side-by-side work can run in forked processes here: the platform forks, and this
    process may have children (a daemonic one, such as a pool's worker, may not)."""
    return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon


def _in_processes(fn: Callable[[T], R], items: list[T], workers: int) -> list[R]:
    """``side_by_side`` in ``workers`` forked processes, each single-threaded, one item at a time.

    Threads instead when another forked job is running (the job is handed over in a global).
    A worker that dies (the system ran out of memory and killed it) is an error that says so, not
    a hang; an interrupt stops the workers at once rather than after their items.
    """
    global _JOB
    if not _FORK.acquire(blocking=False):
        return side_by_side(fn, items, workers)
    pool, finished = None, False
    try:
        _JOB = (fn, items)
        with warnings.catch_warnings():
            # Python >= 3.12 warns on every fork of a process with threads (a Jupyter kernel has
            # several); the workers run torch alone and take no lock those threads hold
            warnings.filterwarnings("ignore", ".*multi-threaded.*fork.*", DeprecationWarning)
            pool = ProcessPoolExecutor(
                workers, multiprocessing.get_context("fork"), initializer=torch.set_num_threads, initargs=(1,)
            )
            done = pool.map(_run, range(len(items)))  # every item submitted: the workers are forked
        out = list(done)
        finished = True
        return out
    except BrokenProcessPool as e:
        raise RuntimeError(
            f"a worker process died while {workers} processes worked side by side (most often the "
            f"system ran out of memory and killed it); free memory, or run on one torch thread "
            f"(torch.set_num_threads(1): the work then runs in this process)"
        ) from e
    finally:
        _JOB = None
        _FORK.release()
        if pool is not None:
            if not finished:  # an interrupt or an error: stop the other workers now, not after their items
                for proc in (getattr(pool, "_processes", None) or {}).values():
                    proc.kill()
            pool.shutdown(wait=finished, cancel_futures=True)


def _run(i: int) -> object:
    """Item ``i`` of the job this forked worker inherited."""
    fn, items = _JOB  # type: ignore[misc]
    return fn(items[i])
