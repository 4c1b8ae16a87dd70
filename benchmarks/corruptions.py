"""Benchmark: loading one corrupted item of a 12-megapixel photo against the plain load of that item.

A 4000 x 3000 test photo is made here (scikit-image's ``astronaut`` upscaled bicubically, with
seeded pixel noise so the JPEG holds photo-like detail: ~2.5 MB at quality 90) and put in a
one-class folder. For each corruption family at severity 5, ``ds[0]`` of
``folder:<tmp>+<family>@5`` (decode, shrink to the working scale, corrupt at 299 x 224) is timed
against ``ds[0]`` of the clean ``folder:<tmp>`` (decode at full size), in one process; rounds
alternate all six loads so they share any CPU contention, and medians are compared. Also printed:
the peak of memory traced by ``tracemalloc`` during one load (numpy and Python allocations;
Pillow's own pixel buffers are not traced, so the decode itself is not in it), and the output size.

Targets (issue 18): <= 0.3 s per corrupted item at 12 MP for every family, memory bounded by the
working scale, not the image.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/corruptions.py [--rounds 5] [--format jpg|png] [--size 4000x3000]

Last line: ``ratio: <slowest family's corrupted load time / plain load time>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from probekit.data import CORRUPTIONS, load_dataset

TARGET_SECONDS = 0.3


def make_photo(folder: Path, size: tuple[int, int], fmt: str) -> Path:
    """The test photo: astronaut upscaled to ``size`` with seeded noise (std 6 levels), as ``fmt``."""
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0.0, 6.0, (size[1], size[0], 3))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    (folder / "photo").mkdir(parents=True)
    path = folder / "photo" / f"photo.{fmt}"
    Image.fromarray(pixels).save(path, quality=90) if fmt == "jpg" else Image.fromarray(pixels).save(path)
    return path


def timed_load(ds) -> tuple[float, Image.Image]:
    t = time.perf_counter()
    img, _ = ds[0]
    return time.perf_counter() - t, img


def traced_peak(ds) -> int:
    tracemalloc.start()
    ds[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--size", default="4000x3000", help="width x height of the test photo")
    parser.add_argument("--severity", type=int, default=5)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        path = make_photo(Path(tmp), (width, height), args.format)
        print(
            f"test photo: {width} x {height} ({width * height / 1e6:.1f} MP) {args.format}, "
            f"{path.stat().st_size / 1e6:.2f} MB; severity {args.severity}; {args.rounds} rounds, medians"
        )
        plain = load_dataset(f"folder:{tmp}", split="all")
        sets = {f: load_dataset(f"folder:{tmp}+{f}@{args.severity}", split="all") for f in CORRUPTIONS}
        for ds in (plain, *sets.values()):  # warm up: imports, file cache
            ds[0]
        times: dict[str, list[float]] = {name: [] for name in ("plain", *CORRUPTIONS)}
        sizes: dict[str, tuple[int, int]] = {}
        for _ in range(args.rounds):
            for name, ds in (("plain", plain), *sets.items()):
                t, img = timed_load(ds)
                times[name].append(t)
                sizes[name] = img.size
        base = statistics.median(times["plain"])
        print(f"{'load':16s} {'median s':>9s} {'x plain':>8s} {'traced peak MB':>15s}  output size")
        print(f"{'plain':16s} {base:9.3f} {1.0:8.2f} {traced_peak(plain) / 1e6:15.1f}  {sizes['plain']}")
        ratios = {}
        for family, ds in sets.items():
            t = statistics.median(times[family])
            ratios[family] = t / base
            flag = "" if t <= TARGET_SECONDS else f"  over the {TARGET_SECONDS} s target"
            print(
                f"{family:16s} {t:9.3f} {t / base:8.2f} {traced_peak(ds) / 1e6:15.1f}  {sizes[family]}{flag}"
            )
        slowest = max(ratios, key=ratios.get)
        print(
            f"slowest family: {slowest}, {statistics.median(times[slowest]):.3f} s "
            f"(target <= {TARGET_SECONDS} s per item)"
        )
        print(f"ratio: {ratios[slowest]:.2f}")


if __name__ == "__main__":
    main()
