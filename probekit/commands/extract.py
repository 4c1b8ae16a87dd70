"""``probekit extract``: extract pooled features at every site into a feature store, print its path.

    probekit extract --model dinov2_vits14 --dataset digits --split train --limit 200
    torchrun --nproc-per-node 2 -m probekit.cli extract --model ... --dataset ...

Runs (or resumes, or reuses) the extraction, prints a short summary, and prints the store
directory as the last line, so scripts can do ``store=$(probekit extract ... | tail -1)``.
"""

from __future__ import annotations

import argparse

NAME = "extract"
HELP = "extract features at every site and layer into a resumable feature store; prints its path last"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name (see `probekit models`)")
    parser.add_argument("--dataset", required=True, help="dataset id (see `probekit datasets`)")
    parser.add_argument("--split", default="train", help="train, val, test or all (default: train)")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the model's)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--max-per-class", type=int, default=None, help="at most N images per class")
    parser.add_argument("--seed", type=int, default=0, help="dataset split seed (default 0)")
    parser.add_argument(
        "--sites",
        nargs="+",
        default=None,
        help="sites (ln1 attn resid_mid ln2 fc1 act fc2 resid_post embed norm, or blocks.<i>.<site>); "
        "default: all",
    )
    parser.add_argument(
        "--pools", nargs="+", default=["cls", "ap", "mean"], help="pools (default: cls ap mean)"
    )
    parser.add_argument(
        "--token-sites", nargs="+", default=[], help="sites to also store unpooled tokens for"
    )
    parser.add_argument("--layers", nargs="+", type=int, default=None, help="block indices (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="compute precision (default: bfloat16 on CUDA, float32 on the CPU)",
    )
    parser.add_argument("--storage-dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="local weights file for --model: .safetensors, or .pth/.bin with a (nested) state dict",
    )
    parser.add_argument("--random-init", action="store_true", help="random weights (controls, tests)")
    parser.add_argument("--root", default=None, help="feature store root (default: probekit's data dir)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_counts(args: argparse.Namespace) -> None:
    """Refuse counts that cannot work before anything is loaded or created."""
    from ..extract import ExtractError

    for flag, value, least in (
        ("--limit", args.limit, 1),
        ("--max-per-class", args.max_per_class, 1),
        ("--batch-size", args.batch_size, 1),
        ("--size", args.size, 1),
        ("--workers", args.workers, 0),
    ):
        if value is not None and value < least:
            raise ExtractError(f"{flag} {value}: must be at least {least} (leave it out for the default)")
    if args.weights and args.random_init:
        raise ExtractError("--weights and --random-init contradict each other; give one of them")


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..distributed import env_info
    from ..extract import extract
    from ..models import load_model

    check_counts(args)
    backbone = load_model(
        args.model,
        image_size=args.size,
        pretrained=not args.random_init,
        device=args.device,
        weights=args.weights,
    )
    dataset = load_dataset(args.dataset, split=args.split, seed=args.seed, max_per_class=args.max_per_class)
    store = extract(
        backbone,
        dataset,
        sites=args.sites,
        pools=args.pools,
        token_sites=args.token_sites,
        layers=args.layers,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        storage_dtype=args.storage_dtype,
        root=args.root,
        limit=args.limit,
        progress=not args.no_progress,
        num_workers=args.workers,
        command=getattr(args, "command_line", None),
    )
    if env_info().rank != 0:
        return 0
    runs = store.meta.get("runs", [])
    size_mb = sum(f.stat().st_size for f in store.path.glob("*.npy")) / 1e6
    print(f"model    {backbone!r}")
    skipped = int(store.meta.get("skipped_files", getattr(dataset, "skipped", 0)) or 0)
    print(
        f"dataset  {args.dataset} [{args.split}]: {store.n} images"
        + (
            f"; {skipped} broken or unreadable files skipped (listed in {store.path.name}/meta.json)"
            if skipped
            else ""
        )
    )
    print(
        f"features {len(store)} keys, {size_mb:.1f} MB, {store.meta['inputs']['storage_dtype']}; "
        f"{'complete' if store.complete else 'INCOMPLETE'}"
    )
    if runs:
        last = runs[-1]
        print(
            f"last run {last['rows']} images in {last['seconds']:.1f} s on {last['device']} "
            f"({last['images_per_s']} img/s, {last['compute_dtype']}, "
            f"{last['world_size']} process(es))"
        )
    print(store.path)
    return 0 if store.complete else 1
