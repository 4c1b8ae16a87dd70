"""Benchmark: cost of extracting every site over a plain forward pass, on the same batches.

Times ``probekit.extract.extract`` (hooks at all 8 block sites on every block plus ``embed`` and
``norm``, pooled ``cls``, ``ap`` and ``mean`` in the hooks, concatenated, cast to float16, copied
and written to a fresh store on disk) against ``model.forward_features`` alone, both over the same
pre-decoded image tensors in one process. Rounds alternate the two to share any CPU contention;
the medians are compared. Target on the CPU: ratio <= 1.15.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/extract_overhead.py [--model vit_small_patch16_224]

Last line: ``ratio: <extract time / plain forward time>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch

from probekit.extract import extract
from probekit.models import load_model
from probekit.sites import capture, resolve_sites


class TensorSet:
    """Pre-decoded images: extraction time without JPEG decoding or resizing."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 10

    def identity(self) -> dict:
        return {"name": "random-tensors", "split": "bench", "n": len(self.images)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    bb = load_model(args.model, pretrained=False, image_size=args.size, device=args.device)
    bb = dataclasses.replace(bb, transform=lambda t: t)
    model = bb.model
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    batches = images.split(args.batch_size)
    ds = TensorSet(images)
    keys = resolve_sites(model)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    print(
        f"{args.model} @ {args.size}px, {args.images} images, batch {args.batch_size}, {args.dtype}, "
        f"threads {torch.get_num_threads()}, {len(keys)} feature keys"
    )

    def timed(fn) -> tuple[float, float]:
        c, w = time.process_time(), time.perf_counter()
        fn()
        return time.process_time() - c, time.perf_counter() - w

    def plain() -> None:
        with torch.no_grad(), torch.autocast(args.device, dtype=dtype, enabled=dtype != torch.float32):
            for xb in batches:
                model.forward_features(xb.to(args.device))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def hooked() -> None:
        with tempfile.TemporaryDirectory() as root:
            extract(
                bb,
                ds,
                batch_size=args.batch_size,
                dtype=args.dtype,
                device=args.device,
                root=root,
                progress=False,
                checkpoint_s=5.0,
            )

    def hooks_only(derive: bool) -> None:
        autocast = torch.autocast(args.device, dtype=dtype, enabled=dtype != torch.float32)
        with torch.no_grad(), capture(model, keys, derive=derive) as cap, autocast:
            for xb in batches:
                model.forward_features(xb.to(args.device))
                cap.take()

    plain()  # warm-up: allocator, kernels, lazy imports
    hooked()
    cpu_p, wall_p, cpu_h, wall_h = [], [], [], []
    cpu_hooks = {True: [], False: []}
    for r in range(args.rounds):
        c, w = timed(plain)
        cpu_p.append(c), wall_p.append(w)
        c, w = timed(hooked)
        cpu_h.append(c), wall_h.append(w)
        for derive in (False, True):
            cpu_hooks[derive].append(timed(lambda: hooks_only(derive))[0])  # noqa: B023
        print(
            f"round {r}: plain {cpu_p[-1]:.2f} cpu-s / {wall_p[-1]:.2f} s, "
            f"extract {cpu_h[-1]:.2f} cpu-s / {wall_h[-1]:.2f} s; hooks alone: fc1/fc2 hooked "
            f"{cpu_hooks[False][-1]:.2f} cpu-s, derived {cpu_hooks[True][-1]:.2f} cpu-s"
        )
    n = args.images
    print(
        f"hooks alone over the plain forward (no store): fc1/fc2 hooked {min(cpu_hooks[False]) / min(cpu_p):.3f}, "
        f"derived from the pooled ln2/act (the default) {min(cpu_hooks[True]) / min(cpu_p):.3f}"
    )
    print(f"plain:   {n / min(cpu_p):.2f} img/cpu-s, {n / min(wall_p):.2f} img/s (best round)")
    print(f"extract: {n / min(cpu_h):.2f} img/cpu-s, {n / min(wall_h):.2f} img/s (best round)")
    print(
        f"wall-clock ratio (best rounds, noisy on shared cores): {min(wall_h) / min(wall_p):.3f}; "
        f"median {statistics.median(wall_h) / statistics.median(wall_p):.3f}"
    )
    print(f"ratio: {min(cpu_h) / min(cpu_p):.3f}")


if __name__ == "__main__":
    main()
