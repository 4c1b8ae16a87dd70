"""probekit.parallel: work side by side in threads or forked processes, failures that say what happened."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from probekit.parallel import can_fork, side_by_side

pytestmark = pytest.mark.skipif(not can_fork(), reason="forked workers need a platform that forks (Linux)")


def _square_and_pid(i: int) -> tuple[int, int, int]:
    return i * i, os.getpid(), torch.get_num_threads()


def test_forked_workers_return_every_result_in_order_single_threaded() -> None:
    threads = torch.get_num_threads()
    out = side_by_side(_square_and_pid, range(7), 2, processes=True)
    assert [v for v, _, _ in out] == [i * i for i in range(7)]
    assert os.getpid() not in {pid for _, pid, _ in out}  # ran in the workers, not here
    assert {n for _, _, n in out} == {1}  # one torch thread each
    assert torch.get_num_threads() == threads  # this process is left as it was
    # the same work in threads: the same results, here in this process
    same = side_by_side(_square_and_pid, range(7), 2)
    assert [v for v, _, _ in same] == [v for v, _, _ in out] and {pid for _, pid, _ in same} == {os.getpid()}


def test_a_closure_over_tensors_runs_in_the_workers_without_pickling_its_inputs() -> None:
    x = torch.arange(12.0).view(3, 4)  # inherited by the forked workers, not sent to them
    total = lambda i: x[i].sum() * 2  # noqa: E731 - a closure cannot be pickled; forking needs none
    assert torch.equal(torch.stack(side_by_side(total, range(3), 2, processes=True)), x.sum(1) * 2)


def _fails_on_two(i: int) -> int:
    if i == 2:
        raise ValueError(f"item {i} is bad")
    return i


def test_an_error_in_a_worker_is_raised_here_with_its_type_and_message() -> None:
    with pytest.raises(ValueError, match="item 2 is bad"):
        side_by_side(_fails_on_two, range(4), 2, processes=True)
    assert side_by_side(_fails_on_two, [0, 1], 2, processes=True) == [0, 1]  # the next job runs


def _killed_on_one(i: int) -> int:
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    return i


def test_a_worker_that_dies_is_an_error_that_says_so_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="worker process died.*ran out of memory"):
        side_by_side(_killed_on_one, range(4), 2, processes=True)
    assert side_by_side(_square_and_pid, range(2), 2, processes=True)[1][0] == 1
