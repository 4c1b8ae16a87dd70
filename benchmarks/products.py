"""Benchmark: the batched solver's float32 products through MKL against oneDNN (probekit.products).

The products are the solver's own shapes: per batch of feature sets, the logits ``(B, C*K, D) x
(B, D, n)`` and the gradient ``(B, C*K, n) x (B, n, D)`` for 8 C x 10 classes, at n = 200 rows
(rotated to 200 columns) and n = 2000 (384 and 1536 columns), and the row-space products of the
features' preparation (``X X^T`` at n = 200, ``X^T X`` at n = 2000). One torch thread, as each of
the solver's CPU workers runs. Both routes run in one process on the same inputs, alternating
rounds (the median of ``--rounds``); each product's largest difference between the two routes,
relative to its largest entry, is printed and must stay at float32's rounding.

    .venv/bin/python benchmarks/products.py [--rounds 5]

Without oneDNN here (:func:`probekit.products.onednn_exact` false: AMX, no oneDNN, or
``PROBEKIT_ONEDNN=0``) both routes are MKL's and the ratio is ~1. Last line:
``ratio: <MKL time / oneDNN time>`` over all the products.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from probekit import products

# (what, B, M, K, N): B products of (M x K) by (K x N)
SHAPES = (
    ("n=200 logits", 16, 80, 200, 200),
    ("n=200 gradient", 16, 80, 200, 200),
    ("n=200 X X^T (384 wide)", 24, 200, 384, 200),
    ("n=2000 logits (384 wide)", 16, 80, 384, 2000),
    ("n=2000 gradient (384 wide)", 16, 80, 2000, 384),
    ("n=2000 logits (1536 wide)", 8, 80, 1536, 2000),
    ("n=2000 X^T X (1536 wide)", 4, 1536, 2000, 1536),
)


def timed(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    """Seconds per product, the best of ``reps`` after one untimed call."""
    torch.bmm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.bmm(a, b)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5, help="products per round and route (the best counts)")
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"oneDNN products here: {products.onednn_exact()}; torch {torch.__version__}, 1 thread")
    gen = torch.Generator().manual_seed(0)
    total = {"mkl": 0.0, "onednn": 0.0}
    for what, b, m, k, n in SHAPES:
        x, y = torch.randn(b, m, k, generator=gen), torch.randn(b, k, n, generator=gen)
        rounds = {"mkl": [], "onednn": []}
        for _ in range(a.rounds):
            rounds["mkl"].append(timed(x, y, a.reps))
            with products.onednn_products():
                rounds["onednn"].append(timed(x, y, a.reps))
        with products.onednn_products():
            fast = torch.bmm(x, y)
        slow = torch.bmm(x, y)
        diff = float((fast - slow).abs().max() / slow.abs().max())
        t = {route: statistics.median(r) for route, r in rounds.items()}
        flop = 2 * b * m * k * n
        for route in t:
            total[route] += t[route]
        print(
            f"{what:28s} MKL {t['mkl'] * 1e3:7.2f} ms ({flop / t['mkl'] / 1e9:4.0f} GFLOP/s)  "
            f"oneDNN {t['onednn'] * 1e3:7.2f} ms ({flop / t['onednn'] / 1e9:4.0f} GFLOP/s)  "
            f"x{t['mkl'] / t['onednn']:.2f}  max rel. difference {diff:.1e}"
        )
    print(f"ratio: {total['mkl'] / total['onednn']:.2f}")


if __name__ == "__main__":
    main()
