"""The corruption shift dial: determinism per image, severity order, parameter sets, working scale, dataset ids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from probekit.data import CORRUPTIONS, list_datasets, load_dataset
from probekit.data.corruptions import (
    IMAGENET_SIDE,
    at_working_scale,
    corrupt,
    motion_blur_array,
    parameter_set,
    working_size,
)

AVAILABLE = {row["id"]: row["available"] for row in list_datasets()}


def rms(a: Image.Image, b: Image.Image) -> float:
    return float(np.sqrt(((np.asarray(a, float) - np.asarray(b, float)) ** 2).mean()))


def mean_distances(dataset_id: str, family: str, n: int) -> list[float]:
    ds = load_dataset(dataset_id, split="test", seed=0, max_per_class=1)
    samples = [(ds[i][0], ds.keys[i]) for i in range(min(n, len(ds)))]
    return [
        float(np.mean([rms(corrupt(img, family, s, key), at_working_scale(img)) for img, key in samples]))
        for s in range(1, 6)
    ]


@pytest.mark.parametrize("family", CORRUPTIONS)
def test_same_image_same_key_gives_identical_pixels(family):
    img = load_dataset("textures", split="test", max_per_class=1)[0][0]
    a = np.asarray(corrupt(img, family, 3, "textures/r0c0"))
    b = np.asarray(corrupt(img, family, 3, "textures/r0c0"))
    assert np.array_equal(a, b)
    clean = np.asarray(at_working_scale(img))
    assert a.shape == clean.shape and a.dtype == np.uint8
    assert not np.array_equal(a, clean)  # it did change the image


@pytest.mark.parametrize("family", ["gaussian_noise", "speckle_noise", "motion_blur", "snow"])
def test_random_families_draw_per_image(family):
    img = Image.new("RGB", (32, 32), (120, 90, 60))
    a = np.asarray(corrupt(img, family, 5, "a"))
    b = np.asarray(corrupt(img, family, 5, "b"))
    if family == "motion_blur":  # a flat image is blind to the angle: use a textured one
        img = load_dataset("textures", split="test", max_per_class=1)[0][0]
        a, b = np.asarray(corrupt(img, family, 5, "a")), np.asarray(corrupt(img, family, 5, "b"))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("family", CORRUPTIONS)
def test_distance_grows_with_severity_on_small_images(family):
    """emoji (64 px) use the CIFAR-10-C parameters."""
    if not AVAILABLE["emoji"]:
        pytest.skip("emoji not provisioned")
    d = mean_distances("emoji", family, 9)
    if family == "motion_blur":
        # published CIFAR-10-C radius 6 vs 8 at the same sigma 2: the extra taps weigh < 1e-9
        assert d[3] == pytest.approx(d[2], abs=0.05)
        d = d[:3] + d[4:]
    assert all(later > earlier for earlier, later in itertools.pairwise(d)), d


@pytest.mark.parametrize("family", CORRUPTIONS)
def test_distance_grows_with_severity_on_large_images(family):
    """224 px photo crops use the ImageNet-C parameters."""
    d = mean_distances("photos", family, 4)
    assert all(later > earlier for earlier, later in itertools.pairwise(d)), d


@pytest.mark.parametrize("dataset_id", ["digits", "faces", "textiles"])
@pytest.mark.parametrize("family", CORRUPTIONS)
def test_severity_1_3_5_are_ordered_everywhere(dataset_id, family):
    """Coarse order on the far-shift sets (snow's published parameters are not monotone step by step)."""
    d = mean_distances(dataset_id, family, 2 if dataset_id == "textiles" else 6)
    assert d[0] < d[2] < d[4], d


def test_parameter_set_switches_above_64_px():
    assert parameter_set(64, 64) == "cifar" and parameter_set(32, 20) == "cifar"
    assert parameter_set(65, 40) == "imagenet" and parameter_set(224, 224) == "imagenet"
    img = load_dataset("photos", split="test", max_per_class=1)[0][0]
    small, large = img.resize((64, 64)), img.resize((96, 96))
    # ImageNet-C noise is stronger: std 0.38 vs 0.10 at severity 5
    assert rms(corrupt(large, "gaussian_noise", 5, "k"), at_working_scale(large)) > 2 * rms(
        corrupt(small, "gaussian_noise", 5, "k"), at_working_scale(small)
    )


def test_motion_blur_kernel_keeps_energy_and_draws_a_line():
    dot = np.zeros((41, 41))
    dot[20, 20] = 1.0
    horizontal = motion_blur_array(dot, radius=6, sigma=2, angle_deg=0)
    assert horizontal.sum() == pytest.approx(1.0)
    assert np.count_nonzero(horizontal[20] > 1e-3) >= 4 and horizontal[:20].sum() + horizontal[21:].sum() == 0
    vertical = motion_blur_array(dot, radius=6, sigma=2, angle_deg=90)
    assert np.allclose(vertical, horizontal.T)


def test_corrupted_dataset_id_is_the_same_samples_corrupted_deterministically():
    clean = load_dataset("faces", split="val", seed=0, max_per_class=3)
    noisy = load_dataset("faces+gaussian_noise@3", split="val", seed=0, max_per_class=3)
    again = load_dataset("faces+gaussian_noise@3", split="val", seed=0, max_per_class=3)
    assert noisy.id == "faces+gaussian_noise@3" and noisy.keys == clean.keys
    assert np.array_equal(noisy.labels, clean.labels)
    assert noisy.identity()["corruption"] == "gaussian_noise@3" and noisy.identity() != clean.identity()
    assert noisy.provenance["corruption"]["severity"] == 3
    for i in range(len(noisy)):
        assert np.array_equal(np.asarray(noisy[i][0]), np.asarray(again[i][0]))
        assert not np.array_equal(np.asarray(noisy[i][0]), np.asarray(clean[i][0]))
    # the corruption of an image does not depend on which split or cap selected it
    everything = load_dataset("faces+gaussian_noise@3", split="all")
    position = everything.keys.index(noisy.keys[0])
    assert np.array_equal(np.asarray(everything[position][0]), np.asarray(noisy[0][0]))


@pytest.mark.parametrize("size", [(37, 23), (8, 8), (300, 90)])
def test_every_family_keeps_odd_and_non_square_sizes(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    for family in CORRUPTIONS:
        out = corrupt(img, family, 5, "odd")
        assert out.size == working_size(*size, parameter_set(*size)) and out.mode == "RGB"


def test_working_scale_is_the_published_one():
    assert working_size(64, 64, "cifar") == (32, 32) and working_size(8, 8, "cifar") == (32, 32)
    assert working_size(4000, 3000, "imagenet") == (299, 224) and working_size(250, 250, "imagenet") == (
        224,
        224,
    )
    assert working_size(16000, 100, "imagenet") == (896, 6)  # longer side capped at 4 x 224
    assert corrupt(Image.new("RGB", (4000, 3000)), "contrast", 1, "k").size == (299, 224)


def seen_by_model(img: Image.Image, side: int = 56) -> np.ndarray:
    """The image as a model with a ``side`` px input sees it (bicubic resize, as timm's transform)."""
    return np.asarray(img.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
@pytest.mark.parametrize("family", CORRUPTIONS)
def test_severity_means_the_same_at_64_and_256_px(family, params):
    """One parameter set on a 64 px and a 256 px version of the same photos: the pixel change a
    56 px model input sees (RMS, corrupted vs clean, each version against its own clean image)
    agrees within 15 % at every severity (measured: within 9 %). Corrupting at native size instead
    fails this for the noise and blur families by 1.5-3.5x (at 256 px the noise is averaged over
    ~21x more pixels, the blur is 4x shorter relative to the image)."""
    ds = load_dataset("photos", split="test", seed=0, max_per_class=1)
    photos = [(ds[i][0], ds.keys[i]) for i in range(4)]
    for severity in (1, 3, 5):
        change = {}
        for side in (64, 256):
            change[side] = np.mean(
                [
                    np.sqrt(
                        (
                            (
                                seen_by_model(
                                    corrupt(
                                        img.resize((side, side), Image.Resampling.BICUBIC),
                                        family,
                                        severity,
                                        key,
                                        params=params,
                                    )
                                )
                                - seen_by_model(img.resize((side, side), Image.Resampling.BICUBIC))
                            )
                            ** 2
                        ).mean()
                    )
                    for img, key in photos
                ]
            )
        assert change[64] == pytest.approx(change[256], rel=0.15), (severity, change)


def test_a_12_megapixel_jpeg_is_corrupted_at_the_working_scale_with_bounded_memory(tmp_path):
    """folder:...+snow@5 on a 4000 x 3000 JPEG: decoded small, corrupted at 299 x 224; numpy's peak
    stays near the working scale (a full-size float64 copy alone would be 288 MB)."""
    import tracemalloc

    photo = load_dataset("photos", split="test", max_per_class=1)[0][0]
    (tmp_path / "cls").mkdir()
    big = photo.resize((4000, 3000), Image.Resampling.BICUBIC)
    big.save(tmp_path / "cls" / "big.jpg", quality=90)
    ds = load_dataset(f"folder:{tmp_path}+snow@5", split="all")
    tracemalloc.start()
    img, _ = ds[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert img.size == (299, 224) and peak < 40e6, peak
    # the reduced decode changes the pixels little: same corruption as from the full-size decode
    full = corrupt(big, "snow", 5, ds.keys[0])
    assert rms(img, full) < 6.0, rms(img, full)
    assert ds.provenance["corruption"]["scale"].startswith("resize, corrupt")
    assert min(ds.source.load.reduced(0, IMAGENET_SIDE).size) >= IMAGENET_SIDE
