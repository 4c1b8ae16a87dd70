"""``probekit layers``: a per-layer linear-probe accuracy table for one model and dataset.

The quickest answer to "which layer?": block outputs (and the final norm) of every block,
extracted once into the feature store, every probe trained at once by the batched trainer
(regularisation chosen on a validation split), test accuracy with a bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import time

NAME = "layers"
HELP = "per-layer linear-probe accuracy of one model on one dataset (block outputs and final norm)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="dinov2_vits14", help="model name (default: the embedded DINOv2-S/14)"
    )
    parser.add_argument("--dataset", default="digits", help="dataset id (`probekit datasets` lists them)")
    parser.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="local weights file for --model: .safetensors, or .pth/.bin with a (nested) state dict",
    )
    parser.add_argument("--random-init", action="store_true", help="random weights (a control)")
    parser.add_argument(
        "--size", type=int, default=None, help="image size in px (default: 112 on CPU for the embedded model)"
    )
    parser.add_argument("--per-class", type=int, default=50, help="images per class and split (default 50)")
    parser.add_argument("--sites", nargs="+", default=["resid_post", "norm"], help="sites to probe")
    parser.add_argument("--pools", nargs="+", default=["cls", "mean"], help="token pooling(s)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..extract import ExtractError
    from ..keys import parse_key
    from ..models import load_model
    from ..pipeline import split_features
    from ..probes.linear import fit_linear_probes

    for flag, value in (("--per-class", args.per_class), ("--size", args.size)):
        if value is not None and value < 1:
            raise ExtractError(f"{flag} {value}: must be at least 1 (leave it out for the default)")
    if args.weights and args.random_init:
        raise ExtractError("--weights and --random-init contradict each other; give one of them")
    start = time.perf_counter()
    bb = load_model(args.model, image_size=args.size, weights=args.weights, pretrained=not args.random_init)
    print(f"model: {bb.display_name}, {bb.image_size}px, depth {bb.depth}, on {bb.device}")
    sf = split_features(
        bb, args.dataset, max_per_class=args.per_class, seed=args.seed, sites=args.sites, pools=args.pools
    )
    n_train, n_test = sf.train.n, sf.test.n  # images; len() of a store counts its feature keys
    print(
        f"dataset: {args.dataset}, {len(sf.classes)} classes, {n_train} train / {n_test} test images"
        + (f", {sf.skipped} unreadable files skipped" if sf.skipped else "")
    )
    table = fit_linear_probes(
        sf.train,
        sf.labels("train"),
        sf.test,
        sf.labels("test"),
        depth=bb.depth,
        seed=args.seed,
        labels={"model": bb.name, "dataset": args.dataset},
    )
    test = table[(table["split"] == "test") & (table["metric"] == "accuracy")].copy()
    test["block"] = [parse_key(k).path for k in test["key"]]
    pivot = test.pivot_table(index=["layer", "block"], columns="pool", values="value").sort_index()
    ci = test.pivot_table(index=["layer", "block"], columns="pool", values=["ci_low", "ci_high"]).sort_index()
    print(f"\nTest accuracy (95% bootstrap interval), {args.dataset}, linear probe per layer:")
    header = f"{'layer':>5}  {'site':<22}" + "".join(f"{p:>22}" for p in pivot.columns)
    print(header)
    for (layer, block), row in pivot.iterrows():
        cells = "".join(
            f"{row[p]:>8.3f} [{ci.loc[(layer, block), ('ci_low', p)]:.3f}, {ci.loc[(layer, block), ('ci_high', p)]:.3f}]"
            for p in pivot.columns
        )
        print(f"{layer:>5}  {block:<22}{cells}")
    for pool in pivot.columns:
        best = pivot[pool].idxmax()
        last = pivot.index[-1]
        print(
            f"best layer ({pool}): {best[1]} (layer {best[0]}/{bb.depth}) {pivot[pool].max():.3f}; "
            f"last ({last[1]}) {pivot[pool].iloc[-1]:.3f}"
        )
    print(f"\ntotal {time.perf_counter() - start:.1f}s")
    return 0
