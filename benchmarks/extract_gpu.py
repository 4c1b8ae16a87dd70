"""Benchmark: GPU extraction throughput of every site, against a plain forward and the FLOP limit.

ViT-B/16 at 224 px under bfloat16 autocast (defaults), all 8 block sites on every block plus
``embed`` and ``norm``, pooled ``cls``, ``ap`` and ``mean`` inside the hooks, concatenated, cast to
float16 and copied to pinned host memory without blocking (exactly what ``extract`` does per
batch). Images are pre-decoded random tensors already on the GPU, so this measures the model and
the hooks, not JPEG decoding. Also times the full ``extract()`` (DataLoader from pre-decoded CPU
tensors, store on disk) with ``--full``.

    python benchmarks/extract_gpu.py [--model vit_base_patch16_224] [--batch-size 256] [--compile]

Prints images/s for the plain forward and for the hooked one, the hook overhead, and the fraction of
22.7k img/s (ViT-B/16 at 224 px on an H100 at its measured 798 TFLOP/s; see
reference/performance.md §1.2). Last line: ``ratio: <hooked images/s / 22,700>``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time

import torch

from probekit.models import load_model
from probekit.sites import capture, resolve_sites

FLOP_LIMIT_IMG_S = 22_700  # ViT-B/16 @ 224, H100 (performance.md §1.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile after the hooks are registered")
    ap.add_argument("--full", action="store_true", help="also time extract() end to end (DataLoader + store)")
    ap.add_argument("--limit-img-s", type=float, default=FLOP_LIMIT_IMG_S)
    args = ap.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    bb = load_model(args.model, pretrained=False, image_size=args.size, device=device)
    model = bb.model
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    keys = resolve_sites(model)
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(
        f"{args.model} @ {args.size}px on {name}, batch {args.batch_size}, {args.dtype} autocast, "
        f"{len(keys)} feature keys, compile={args.compile}"
    )

    def autocast():
        return (
            torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def throughput(step, fwd) -> float:
        for _ in range(3):  # warm-up (and compilation)
            step(fwd)
        sync()
        t = time.perf_counter()
        for _ in range(args.batches):
            step(fwd)
        sync()
        return args.batches * args.batch_size / (time.perf_counter() - t)

    def plain_step(fwd) -> None:
        with torch.no_grad(), autocast():
            fwd(x)

    fwd = torch.compile(model.forward_features) if args.compile else model.forward_features
    plain = throughput(plain_step, fwd)

    with capture(model, keys) as cap:  # hooks first, then compile (hooks after compile never fire)
        hooked_fwd = torch.compile(model.forward_features) if args.compile else model.forward_features

        def hooked_step(fwd) -> None:
            with torch.no_grad(), autocast():
                fwd(x)
            feats = cap.take()
            flat = torch.cat(list(feats.values()), dim=1).to(torch.float16)
            flat.to("cpu", non_blocking=cuda)

        hooked = throughput(hooked_step, hooked_fwd)

    print(
        f"plain forward:          {plain:,.0f} img/s ({plain / args.limit_img_s:.1%} of {args.limit_img_s:,.0f})"
    )
    print(
        f"all sites, pooled:      {hooked:,.0f} img/s ({hooked / args.limit_img_s:.1%} of {args.limit_img_s:,.0f})"
    )
    print(f"hook overhead:          {plain / hooked:.3f}x (time with hooks / plain time)")

    if args.full:
        from probekit.extract import extract

        class TensorSet:
            def __init__(self, images: torch.Tensor) -> None:
                self.images = images

            def __len__(self) -> int:
                return len(self.images)

            def __getitem__(self, i: int):
                return self.images[i], 0

            def identity(self) -> dict:
                return {"name": "random-tensors", "split": "bench", "n": len(self.images)}

        n = args.batch_size * args.batches
        cpu_images = torch.randn(n, 3, args.size, args.size)
        fbb = dataclasses.replace(bb, transform=lambda t: t)
        with tempfile.TemporaryDirectory() as root:
            t = time.perf_counter()
            extract(
                fbb,
                TensorSet(cpu_images),
                batch_size=args.batch_size,
                device=device,
                dtype=args.dtype,
                root=root,
                progress=False,
            )
            full = n / (time.perf_counter() - t)
        print(f"extract() end to end:   {full:,.0f} img/s (DataLoader from CPU tensors, store on disk)")
    print(f"ratio: {hooked / args.limit_img_s:.3f}")


if __name__ == "__main__":
    main()
