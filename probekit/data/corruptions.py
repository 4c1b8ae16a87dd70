"""The shift dial: five CIFAR-10-C / ImageNet-C corruption families at severities 1-5.

Paper 1 probes CIFAR-10-C at severity 5 with ``contrast``, ``gaussian_noise``, ``motion_blur``,
``snow`` and ``speckle_noise``. This module applies those five to any RGB image with the
parameters of Hendrycks & Dietterich's published generators (``hendrycks/robustness``,
``ImageNet-C/create_c/make_cifar_c.py`` and ``make_imagenet_c.py``), *at the scale those
parameters were made for*.

Parameter set: images whose longer side is at most 64 px get the CIFAR-10-C parameters, larger
images the ImageNet-C ones (``params=`` forces one set).

Scale (resize, corrupt, hand over): the generators' parameters are in pixels of a 32 px
(CIFAR-10-C) or 224 px (ImageNet-C) image: a blur radius, a snow-flake size, a per-pixel noise
std all mean something else at 64 px or at 4000 px. So the image is first resampled (bicubic,
antialiased when shrinking) to its *working scale*, shorter side :data:`CIFAR_SIDE` = 32 or
:data:`IMAGENET_SIDE` = 224, aspect ratio kept, corrupted there, and returned at that size; the
model's own input transform then resizes it to the model's input, as it does every clean image.
The parameters are never rescaled (scaling them would invent values nobody published). Hence:

* severity means the same at any native resolution: a 64 px and a 256 px version of one image
  are corrupted on the same working grid with the same random draws (``tests`` check the pixel
  change seen at a model's input agrees within 15 %);
* large images are shrunk *before* corrupting (a 12-megapixel photo costs a 224 px corruption;
  JPEGs are decoded at a reduced DCT scale no smaller than the working scale), so time and
  memory are bounded by the working scale, not by the image;
* a corrupted image carries no detail finer than its working scale: a 64 px emoji corrupted
  with CIFAR-10-C parameters is a 32 px image (as every CIFAR-10-C image is), so a dial against
  the clean 64 px images includes that resolution loss at every severity; a model run above
  224 px sees ImageNet-C-scale images upsampled, as it would see ImageNet-C itself;
* very elongated images keep their aspect ratio with the longer side capped at
  :data:`MAX_ASPECT` × the working side (their shorter side is then below it).

Determinism: the random draws come from a numpy ``Generator`` seeded with
``sha256(family + sample key)``, so an image is corrupted the same way in every run, split and
process, and the *same* draws are reused at every severity (only the published parameters
change), which makes the severities a clean dial.

Where this deviates from the published code (which needs ImageMagick through Wand, and OpenCV):

* ``motion_blur``: ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` is re-implemented in
  numpy as a one-sided line kernel of ``2*ceil(radius)+1`` taps with weights
  ``exp(-i^2 / (2 sigma^2))`` (normalised), taps at integer-rounded offsets
  ``(i cos(angle), i sin(angle))`` (rows pointing down), image edges replicated. The published
  code also round-trips through PNG; here the image stays in floating point until the end.
  Angle uniform in [-45, 45] degrees, as published.
* ``snow``: the published layered recipe (normal snow field, centre zoom, threshold, motion blur
  at an angle uniform in [-135, -45] degrees, whitening blend of the image towards
  ``1.5 * gray + 0.5``, snow added twice: as is and rotated 180 degrees) with the numpy motion
  blur above; the snow field is quantised to 8 bits before blurring as the PNG round trip does;
  gray uses OpenCV's RGB weights (0.299, 0.587, 0.114); the centre zoom crops both axes, so
  non-square images work (the published code assumes square ones).
* ImageNet-C resizes to 256 px and centre-crops 224 px before corrupting; here the whole image
  is kept with its shorter side at 224 px (objects appear ~14 % smaller in pixels than in
  ImageNet-C, nothing is cropped away).
* Outputs are truncated to uint8 like the published ``np.uint8(...)``; nothing else differs for
  ``contrast``, ``gaussian_noise`` and ``speckle_noise``.

Severity as a dial: pixel distance to the clean image at the working scale grows with severity
for every family on emoji (CIFAR parameters) and photo crops (ImageNet parameters), with two
properties of the published parameters themselves: CIFAR ``motion_blur`` severities 3 and 4
coincide (radius 6 vs 8 at the same sigma 2; the extra taps weigh < 1e-9), and ``snow`` is only
ordered coarsely (1 < 3 < 5) on some far-shift sets, because its threshold, zoom and blur
change together.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from PIL import Image
from scipy.ndimage import zoom as nd_zoom

CORRUPTIONS = ("contrast", "gaussian_noise", "motion_blur", "snow", "speckle_noise")
SEVERITIES = (1, 2, 3, 4, 5)
SMALL_IMAGE_MAX_SIDE = 64  # up to this size the CIFAR-10-C parameters apply
CIFAR_SIDE = 32  # shorter side of the working scale of each parameter set: CIFAR-10-C images ...
IMAGENET_SIDE = 224  # ... and ImageNet-C images
MAX_ASPECT = 4  # the working scale's longer side is at most this many times its shorter side

# published parameters per family and severity 1..5
CIFAR_C = {
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards the per-channel mean
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive noise, image in [0, 1]
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),  # std of multiplicative noise
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # (radius, sigma)
    # (field mean, field std, zoom, threshold, blur radius, blur sigma, image weight)
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
}
IMAGENET_C = {
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
}
PARAMETER_RULE = f"CIFAR-10-C for images up to {SMALL_IMAGE_MAX_SIDE} px on the longer side, ImageNet-C above"
SCALE_RULE = (
    f"resize, corrupt, hand over: each image is resampled to the scale its parameters were published for "
    f"(shorter side {CIFAR_SIDE} px for CIFAR-10-C, {IMAGENET_SIDE} px for ImageNet-C, aspect kept, longer side "
    f"at most {MAX_ASPECT}x that), corrupted there and returned at that size; the model's transform resizes it "
    "to its input. Parameters are not rescaled. Large images are shrunk before corrupting, never corrupted "
    "at full size."
)
ALGORITHM_VERSION = "2"  # bump when outputs change: it is part of every dataset identity


def parameter_set(width: int, height: int) -> str:
    """``"cifar"`` for images up to 64 px on the longer side, else ``"imagenet"``."""
    return "cifar" if max(width, height) <= SMALL_IMAGE_MAX_SIDE else "imagenet"


def working_size(width: int, height: int, params: str) -> tuple[int, int]:
    """(width, height) of the working scale of ``params``: shorter side 32 or 224 px, aspect kept
    (the longer side capped at :data:`MAX_ASPECT` × that side)."""
    side = CIFAR_SIDE if params == "cifar" else IMAGENET_SIDE
    scale = min(side / min(width, height), MAX_ASPECT * side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def at_working_scale(img: Image.Image, params: str | None = None) -> Image.Image:
    """``img`` (RGB) resampled to the working scale of ``params`` (default: chosen by its size):
    the clean counterpart of :func:`corrupt`'s output. Bicubic; shrinking first box-reduces by
    an integer factor (``reducing_gap``), so a 12-megapixel image costs little."""
    params = params or parameter_set(*img.size)
    if params not in ("cifar", "imagenet"):
        raise ValueError(f"unknown corruption parameter set {params!r}; use 'cifar' or 'imagenet'")
    size = working_size(*img.size, params)
    img = img.convert("RGB")
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _rng(family: str, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{family}\x00{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def motion_blur_array(x: np.ndarray, radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """One-sided Gaussian-weighted line blur of an (H, W) or (H, W, C) float array."""
    width = 2 * math.ceil(radius) + 1
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2.0 * sigma * sigma))
    weights /= weights.sum()
    theta = math.radians(angle_deg)
    dx = np.ceil(taps * math.cos(theta) - 0.5).astype(int)
    dy = np.ceil(taps * math.sin(theta) - 0.5).astype(int)
    pad = width
    spec = ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2)
    padded = np.pad(x, spec, mode="edge")
    h, w = x.shape[:2]
    out = np.zeros_like(x, dtype=np.float64)
    for weight, ox, oy in zip(weights, dx, dy):
        out += weight * padded[pad + oy : pad + oy + h, pad + ox : pad + ox + w]
    return out


def _centre_zoom(field: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of a 2-d array by ``factor`` keeping its shape (bilinear)."""
    h, w = field.shape
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = nd_zoom(field[top : top + ch, left : left + cw], factor, order=1)
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_top : trim_top + h, trim_left : trim_left + w]


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + c * rng.standard_normal(x.shape)


def _speckle_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + x * (c * rng.standard_normal(x.shape))


def _motion_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = c
    return motion_blur_array(x, radius, sigma, rng.uniform(-45.0, 45.0))


def _snow(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = c
    field = mean + std * rng.standard_normal(x.shape[:2])
    field = _centre_zoom(field, zoom)
    field[field < threshold] = 0.0
    field = np.floor(np.clip(field, 0.0, 1.0) * 255.0)  # 8-bit, as the PNG round trip
    flakes = motion_blur_array(field, radius, sigma, rng.uniform(-135.0, -45.0)) / 255.0
    flakes = flakes[..., None]
    gray = (x @ np.array([0.299, 0.587, 0.114]))[..., None]
    x = keep * x + (1.0 - keep) * np.maximum(x, gray * 1.5 + 0.5)
    return x + flakes + np.rot90(flakes, k=2)


_FAMILIES = {
    "contrast": _contrast,
    "gaussian_noise": _gaussian_noise,
    "speckle_noise": _speckle_noise,
    "motion_blur": _motion_blur,
    "snow": _snow,
}


def check_corruption(family: str, severity: int) -> None:
    """Raise ``ValueError`` naming the valid choices when family or severity is unknown."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown corruption {family!r}; use one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be 1..5, got {severity!r}")


def corrupt(img: Image.Image, family: str, severity: int, key: str, *, params: str | None = None) -> Image.Image:
    """``img`` corrupted by ``family`` at ``severity``, at the working scale of its parameter set.

    ``key`` names the sample (seeds the draws); ``params`` (``"cifar"`` or ``"imagenet"``)
    overrides the choice by size. Returns an RGB image of :func:`working_size`, not of the
    input's size (see the module docstring).
    """
    check_corruption(family, severity)
    params = params or parameter_set(*img.size)
    table = CIFAR_C if params == "cifar" else IMAGENET_C
    x = np.asarray(at_working_scale(img, params), dtype=np.float64) / 255.0
    out = _FAMILIES[family](x, table[family][severity - 1], _rng(family, key))
    return Image.fromarray(np.uint8(np.clip(out, 0.0, 1.0) * 255.0))
