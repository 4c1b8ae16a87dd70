"""Benchmark: the probe tables' bootstrap intervals, by count-matrix products against indexing.

Every probe row of a result table carries a percentile bootstrap interval over the test images
(``n_boot = 1000`` by default, for accuracy and balanced accuracy). Scored the old way, each
interval draws the ``(n_boot, m)`` resample indices and gathers the labels and predictions of
every resample: at m = 2000 test images that was ~10 ms per probe and metric, ~50 s for the 2304
probes x 2 metrics of a layer-wise table. :func:`probekit.metrics.resample_stats` counts the
draws once per test-set size (cached) and scores all resamples of a probe with one product.

Both routes run here in one process, on the same predictions, alternating rounds; the intervals
must agree to the last bit. The labels are ``digits``' (sklearn's 8 x 8 digits, offline), tiled
to ``--rows``; the predictions are the labels with a seeded ``--errors`` fraction replaced by
random classes (the cost does not depend on the values).

    .venv/bin/python benchmarks/bootstrap.py [--probes 200] [--rows 2000] [--n-boot 1000]

Last line: ``ratio: <indexing time / count-matrix time>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.datasets import load_digits

from probekit.metrics import METRICS, bootstrap_ci, resample_counts, resampled

LEVEL = 0.95


def indexed_ci(y: np.ndarray, pred: np.ndarray, metric: str, n_boot: int, seed: int) -> tuple[float, float]:
    """The interval as scored before: fresh draws, every resample gathered (:func:`resampled`)."""
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    alpha = (1.0 - LEVEL) / 2.0
    low, high = np.quantile(resampled(METRICS[metric], y, pred, idx), [alpha, 1.0 - alpha])
    return float(low), float(high)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--rows", type=int, default=2000, help="test images per probe")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--errors", type=float, default=0.2, help="fraction of wrong predictions")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    digits = load_digits().target
    y = np.resize(digits, a.rows)
    rng = np.random.default_rng(0)
    preds = [np.where(rng.random(a.rows) < a.errors, rng.integers(0, 10, a.rows), y) for _ in range(a.probes)]
    metrics = ("accuracy", "balanced_accuracy")
    calls = a.probes * len(metrics)
    print(f"{a.probes} probes x {len(metrics)} metrics, {a.rows} test rows, n_boot={a.n_boot}")

    t0 = time.perf_counter()
    resample_counts(a.rows, a.n_boot, 0)
    print(f"counting the draws (once per test-set size): {time.perf_counter() - t0:.3f} s")

    old_t, new_t = [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        old = [indexed_ci(y, p, m, a.n_boot, 0) for p in preds for m in metrics]
        t1 = time.perf_counter()
        new = [bootstrap_ci(y, p, m, n_boot=a.n_boot, level=LEVEL)[1:] for p in preds for m in metrics]
        t2 = time.perf_counter()
        old_t.append(t1 - t0)
        new_t.append(t2 - t1)
        if old != new:
            raise SystemExit("the two routes gave different intervals")
    o, n = statistics.median(old_t), statistics.median(new_t)
    print(f"indexing:     {o:.3f} s ({1000 * o / calls:.2f} ms per interval)")
    print(f"count matrix: {n:.3f} s ({1000 * n / calls:.2f} ms per interval); intervals identical")
    print(f"ratio: {o / n:.2f}")


if __name__ == "__main__":
    main()
