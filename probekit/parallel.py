"""Independent CPU work side by side: one item per torch thread, each item single-threaded.

The batched solvers' products are small (a few MFLOP each), and torch's intra-op threads split
them with much overhead: on 2 cores, two batches of probes solved side by side with one thread
each use ~25% fewer CPU seconds than one batch after the other on two threads
(``benchmarks/README.md``, "`--scaling`"). On a GPU there is one worker: the device already runs
a batch in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def cpu_workers(device: torch.device, n_items: int) -> int:
    """How many items to run at once: one per torch thread on a CPU (at most ``n_items``), else 1."""
    return 1 if device.type != "cpu" else max(1, min(torch.get_num_threads(), n_items))


def side_by_side(
    fn: Callable[[T], R], items: Iterable[T], workers: int, done: Callable[[R], object] | None = None
) -> list[R]:
    """``[fn(item) for item in items]``, ``workers`` at a time with torch single-threaded meanwhile.

    torch's thread count is process-wide: it is 1 while the items run and restored afterwards,
    exceptions included. Results come back in the order of ``items``; ``done`` (a progress bar's
    step, say) is called on each in that order, in the calling thread, as it arrives.
    """
    items = list(items)
    done = done or (lambda result: None)
    if workers <= 1 or len(items) <= 1:
        return [_then(fn(item), done) for item in items]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # each worker sets its own OpenMP thread count too: a new thread starts at OpenMP's default
        # (every core), which oneDNN's products (probekit.products) would use
        with ThreadPoolExecutor(
            workers, thread_name_prefix="probekit", initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            return [_then(result, done) for result in pool.map(fn, items)]
    finally:
        torch.set_num_threads(threads)


def _then(result: R, done: Callable[[R], object]) -> R:
    """``result``, after ``done(result)``."""
    done(result)
    return result
