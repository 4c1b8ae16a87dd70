"""Image decoding for the registry: checking a file decodes fully, and normalising any mode to RGB.

Every image the registry hands out is RGB: grayscale is replicated to three channels, images with
transparency (RGBA, LA, palette with a transparent colour) are composited on white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# what Pillow raises on a broken file: OSError (truncated, UnidentifiedImageError), SyntaxError
# (some malformed headers), ValueError / struct errors from damaged chunks, decompression bombs
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def is_image_file(path: Path | str) -> bool:
    """Whether a file name has one of the image extensions the registry reads."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def decode_error(path: Path | str) -> str | None:
    """Fully decode an image file; ``None`` when it is good, else why it is not.

    ``Image.verify()`` alone misses truncated pixel data, so the pixels are decoded too.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.width < 1 or img.height < 1:
                return "image has no pixels"
    except DECODE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """The image in RGB mode: transparency composited on white, grayscale replicated."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: Path | str, min_side: int | None = None) -> Image.Image:
    """Open, decode and convert one image file to RGB (the file is closed afterwards).

    With ``min_side``, a large image may come back smaller, its shorter side still at least
    ``min_side`` px: JPEGs are decoded at a reduced DCT scale (``draft``), other files are
    box-reduced by an integer factor before the RGB conversion, so what follows never holds the
    full-size image twice. For callers that resample anyway (the corruptions).
    """
    with Image.open(path) as img:
        if min_side is not None and img.format == "JPEG" and min(img.size) > 2 * min_side:
            scale = min_side / min(img.size)
            img.draft(img.mode, (max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        img.load()
        factor = min(img.size) // min_side if min_side else 1
        if factor >= 2 and img.mode in ("RGB", "RGBA", "L", "LA"):
            img = img.reduce(factor)
        return to_rgb(img)


def gray_array_to_image(pixels: np.ndarray, top: float = 255.0) -> Image.Image:
    """A 2-d array of gray levels in ``[0, top]`` as an RGB image."""
    arr = np.clip(np.asarray(pixels, dtype=np.float64) * (255.0 / top), 0, 255)
    return Image.fromarray(np.rint(arr).astype(np.uint8)).convert("RGB")
