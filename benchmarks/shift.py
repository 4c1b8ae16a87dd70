"""Benchmark: Fréchet distance by the symmetric eigen route against ``scipy.linalg.sqrtm``.

At d = 384, 768 and 1536, on the same inputs: two Gaussian fits (mean, covariance) of 4·d samples
each (correlated features: a low-rank factor plus noise, as ViT features are), then

* sqrtm: the pytorch-fid formula, ``Tr sqrtm(Σ₁ Σ₂)`` (complex result, real part taken);
* ours: :func:`probekit.shift.frechet_from_stats`, ``Σ √eigvalsh(√Σ₁ Σ₂ √Σ₁)`` with ``√Σ₁`` from
  ``eigh``, float64 (on ``--device`` when given).

Rounds alternate the two routes so they share any CPU contention; medians are compared, and the
two FDs must agree to 1e-6 relative. Also printed: one full :func:`probekit.shift.shift_table`
(``--keys`` keys, n = 300 per side, d = 384 and 1536 mixed like a ViT-S, all five measures,
n_boot = 20), the workload the notebooks run per dataset pair, and one blockwise RBF MMD² at
n = ``--mmd-n`` per side, d = 768 (memory stays O(block²), not O(n²)).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shift.py [--rounds 3] [--keys 300] [--mmd-n 10000] [--device cuda]

Last line: ``ratio: <sqrtm time / eigen-route time at d = 768>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import scipy.linalg
import torch

from probekit.shift import SmallSampleWarning, frechet_from_stats, mmd2, shift_table


def gaussian_stats(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, rank = 4 * d, max(8, d // 8)
    factors = rng.normal(size=(rank, d)) * np.linspace(2.0, 0.1, rank)[:, None]
    x = rng.normal(size=(n, rank)) @ factors + 0.3 * rng.normal(size=(n, d)) + rng.normal(size=d)
    return x.mean(0), np.cov(x, rowvar=False)


def fd_sqrtm(mu1, s1, mu2, s2) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean).real)


def timed(fn) -> tuple[float, float]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def bench_fd(d: int, rounds: int, device: str) -> tuple[float, float]:
    mu1, s1 = gaussian_stats(d, 1)
    mu2, s2 = gaussian_stats(d, 2)
    if device != "cpu":  # warm up the device's linear algebra
        frechet_from_stats(mu1, s1, mu2, s2, device=device)
    t_ref, t_ours, v_ref, v_ours = [], [], 0.0, 0.0
    for _ in range(rounds):
        t, v_ref = timed(lambda: fd_sqrtm(mu1, s1, mu2, s2))
        t_ref.append(t)
        t, v_ours = timed(lambda: frechet_from_stats(mu1, s1, mu2, s2, device=device))
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.synchronize()
        t_ours.append(t)
    rel = abs(v_ours - v_ref) / abs(v_ref)
    ref, ours = statistics.median(t_ref), statistics.median(t_ours)
    print(
        f"d = {d:5d}: sqrtm {ref:8.3f} s   eigen {ours:8.3f} s   x{ref / ours:5.2f}   "
        f"FD {v_ours:.6f} (rel. diff {rel:.1e})"
    )
    if rel > 1e-6:
        raise SystemExit(f"routes disagree at d = {d}: {v_ours} vs {v_ref}")
    return ref, ours


def bench_table(n_keys: int, device: str) -> None:
    rng = np.random.default_rng(0)

    def store(shift: float) -> dict[str, np.ndarray]:
        out = {}
        for i in range(n_keys):
            block, rest = divmod(i, 24)
            site = ("ln1", "attn", "resid_mid", "ln2", "fc1", "act", "fc2", "resid_post")[rest // 3]
            d = 1536 if site in ("fc1", "act") else 384
            key = f"blocks.{block}.{site}/{('cls', 'ap', 'mean')[rest % 3]}"
            out[key] = (rng.normal(size=(300, d)) + shift).astype(np.float32)
        return out

    ref, tgt = store(0.0), store(0.05)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        df = shift_table(
            ref,
            tgt,
            depth=12,
            labels={"model": "m", "dataset": "d", "reference": "r"},
            n=300,
            n_boot=20,
            device=device,
            progress=False,
        )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"shift_table: {n_keys} keys x 5 measures, n = 300, n_boot = 20: {wall:.1f} s wall, "
        f"{cpu:.1f} s CPU ({torch.get_num_threads()} threads), {len(df)} rows"
    )


def bench_mmd(n: int, device: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 768)).astype(np.float32)
    y = (rng.normal(size=(n, 768)) + 0.02).astype(np.float32)
    t, value = timed(lambda: mmd2(x, y, device=device))
    print(
        f"mmd2 rbf, blockwise (2048-row blocks, float64), n = {n} per side, d = 768: {t:.1f} s, "
        f"MMD² = {value:.3e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=300, help="keys in the shift_table run (0: skip)")
    parser.add_argument("--mmd-n", type=int, default=10_000, help="rows per side for the MMD run (0: skip)")
    parser.add_argument("--device", default="cpu", help="torch device for the eigen route (default: cpu)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if args.keys:
        bench_table(args.keys, args.device)
    if args.mmd_n:
        bench_mmd(args.mmd_n, args.device)
    results = {d: bench_fd(d, args.rounds, args.device) for d in (384, 768, 1536)}
    ref, ours = results[768]
    print(f"ratio: {ref / ours:.2f}")


if __name__ == "__main__":
    main()
