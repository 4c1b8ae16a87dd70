"""Write tiny copies of torchvision datasets in the exact on-disk layout torchvision reads.

Each writer puts a few images per class under ``root`` as the real download unpacks them (file
names, folder names, pickle/.mat/.bin/.h5/.csv formats, 1-based label files, label 10 for digit
0 in SVHN, column-major STL-10 images, ...), following ``torchvision/datasets/<name>.py``. It
returns what a correct loader must give back: the class names (or their count), the number of
images per official split, and a few (official split, index, HWC uint8 image) triples written
as arrays, so image orientation is checked too. Only pixel content and sizes are invented.
"""

from __future__ import annotations

import csv
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RNG_SEED = 0


@dataclass
class Written:
    """What the fixture wrote, i.e. what loading it must return."""

    classes: list[str] | None  # exact names, or None: only the count is checked
    n_classes: int
    official: dict[str, list[int]]  # official split -> labels in torchvision's order
    pixels: list[tuple[str, int, np.ndarray]] = field(default_factory=list)  # (split, index, HWC uint8)


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng([RNG_SEED, sum(map(ord, name))])


def _jpg(path: Path, rng: np.random.Generator, size: int = 8, ext: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, ext)


def _labels(n_classes: int, per_class: int) -> list[int]:
    return [c for c in range(n_classes) for _ in range(per_class)]


# ---- CIFAR-10 / CIFAR-100: pickled batches (N, 3072) rows, channel-major -------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_batch(path: Path, images: np.ndarray, labels: list[int], key: str) -> None:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # HWC -> CHW rows, as released
    entry = {
        "batch_label": path.name,
        key: labels,
        "data": rows,
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
    }
    with open(path, "wb") as fh:
        pickle.dump(entry, fh, protocol=2)


def write_cifar10(root: Path, per_class_batch: int = 1, per_class_test: int = 2) -> Written:
    rng = _rng("cifar10")
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_labels, pixels = [], []
    for b in range(1, 6):
        labels = _labels(10, per_class_batch)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        _cifar_batch(base / f"data_batch_{b}", images, labels, "labels")
        if b == 2:
            pixels.append(("train", len(train_labels) + 3, images[3]))
        train_labels += labels
    test_labels = _labels(10, per_class_test)
    images = rng.integers(0, 256, (len(test_labels), 32, 32, 3), dtype=np.uint8)
    _cifar_batch(base / "test_batch", images, test_labels, "labels")
    pixels.append(("test", 7, images[7]))
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump(
            {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072}, fh, protocol=2
        )
    return Written(CIFAR10_CLASSES, 10, {"train": train_labels, "test": test_labels}, pixels)


def write_cifar100(root: Path, per_class_train: int = 5, per_class_test: int = 1) -> Written:
    rng = _rng("cifar100")
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    names = [f"fine_class_{i:03d}" for i in range(100)]
    official, pixels = {}, []
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        labels = _labels(100, per)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        entry = {
            "filenames": [f"{i}.png" for i in range(len(labels))],
            "batch_label": split,
            "fine_labels": labels,
            "coarse_labels": [c // 5 for c in labels],
            "data": rows,
        }
        with open(base / split, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
        official[split] = labels
        pixels.append((split, 11, images[11]))
    with open(base / "meta", "wb") as fh:
        pickle.dump(
            {"fine_label_names": names, "coarse_label_names": [f"coarse_{i}" for i in range(20)]},
            fh,
            protocol=2,
        )
    return Written(names, 100, official, pixels)


# ---- SVHN: train_32x32.mat / test_32x32.mat, X (32, 32, 3, N), y (N, 1) with 10 for digit 0 --------


def write_svhn(root: Path, per_class: dict[str, int] | None = None) -> Written:
    from scipy.io import savemat

    rng = _rng("svhn")
    root.mkdir(parents=True, exist_ok=True)
    official, pixels = {}, []
    for split, per in (per_class or {"train": 3, "test": 2}).items():
        labels = _labels(10, per)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        y = np.array([10 if c == 0 else c for c in labels], dtype=np.uint8)[:, None]
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": y})
        official[split] = labels
        pixels.append((split, 4, images[4]))
    return Written([str(d) for d in range(10)], 10, official, pixels)


# ---- Flowers102: flowers-102/{jpg/image_%05d.jpg, imagelabels.mat, setid.mat}, 1-based ----------


def write_flowers102(root: Path, per_class: dict[str, int] | None = None) -> Written:
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    rng = _rng("flowers102")
    base = root / "flowers-102"
    per_class = per_class or {"train": 1, "val": 1, "test": 2}
    ids = {"train": [], "val": [], "test": []}
    labels_1based = []
    image_id = 0
    for c in range(102):
        for split, per in per_class.items():
            for _ in range(per):
                image_id += 1
                labels_1based.append(c + 1)
                ids[split].append(image_id)
                _jpg(base / "jpg" / f"image_{image_id:05d}.jpg", rng)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels_1based], dtype=np.uint8)})
    savemat(
        base / "setid.mat",
        {
            "trnid": np.array([ids["train"]], dtype=np.uint16),
            "valid": np.array([ids["val"]], dtype=np.uint16),
            "tstid": np.array([ids["test"]], dtype=np.uint16),
        },
    )
    official = {s: [labels_1based[i - 1] - 1 for i in ids[s]] for s in ids}
    return Written(list(Flowers102.classes), 102, official)


# ---- Oxford-IIIT Pet: images/<Breed>_<n>.jpg + annotations/{trainval,test}.txt ---------------------

# the 37 breeds as the released image ids spell them (cats capitalised), in class-id order 1..37
PET_BREEDS = [
    "Abyssinian",
    "american_bulldog",
    "american_pit_bull_terrier",
    "basset_hound",
    "beagle",
    "Bengal",
    "Birman",
    "Bombay",
    "boxer",
    "British_Shorthair",
    "chihuahua",
    "Egyptian_Mau",
    "english_cocker_spaniel",
    "english_setter",
    "german_shorthaired",
    "great_pyrenees",
    "havanese",
    "japanese_chin",
    "keeshond",
    "leonberger",
    "Maine_Coon",
    "miniature_pinscher",
    "newfoundland",
    "Persian",
    "pomeranian",
    "pug",
    "Ragdoll",
    "Russian_Blue",
    "saint_bernard",
    "samoyed",
    "scottish_terrier",
    "shiba_inu",
    "Siamese",
    "Sphynx",
    "staffordshire_bull_terrier",
    "wheaten_terrier",
    "yorkshire_terrier",
]


def write_pets(root: Path, per_class: dict[str, int] | None = None) -> Written:
    rng = _rng("pets")
    base = root / "oxford-iiit-pet"
    (base / "annotations" / "trimaps").mkdir(parents=True)
    official: dict[str, list[int]] = {}
    n = 0
    for split, per in (per_class or {"trainval": 5, "test": 2}).items():
        lines, labels = [], []
        for c, breed in enumerate(PET_BREEDS):
            species = 1 if breed[0].isupper() else 2
            for _ in range(per):
                n += 1
                _jpg(base / "images" / f"{breed}_{n}.jpg", rng)
                lines.append(f"{breed}_{n} {c + 1} {species} {c + 1}")
                labels.append(c)
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        official["train" if split == "trainval" else split] = labels
    names = [" ".join(part.title() for part in b.split("_")) for b in PET_BREEDS]
    return Written(names, 37, official)


# ---- DTD: dtd/dtd/images/<class>/<file>.jpg + dtd/dtd/labels/{train,val,test}1.txt ---------------

DTD_CLASSES = [
    "banded",
    "blotchy",
    "braided",
    "bubbly",
    "bumpy",
    "chequered",
    "cobwebbed",
    "cracked",
    "crosshatched",
    "crystalline",
    "dotted",
    "fibrous",
    "flecked",
    "freckled",
    "frilly",
    "gauzy",
    "grid",
    "grooved",
    "honeycombed",
    "interlaced",
    "knitted",
    "lacelike",
    "lined",
    "marbled",
    "matted",
    "meshed",
    "paisley",
    "perforated",
    "pitted",
    "pleated",
    "polka-dotted",
    "porous",
    "potholed",
    "scaly",
    "smeared",
    "spiralled",
    "sprinkled",
    "stained",
    "stratified",
    "striped",
    "studded",
    "swirly",
    "veined",
    "waffled",
    "woven",
    "wrinkled",
    "zigzagged",
]


def write_dtd(root: Path, per_class: int = 1) -> Written:
    rng = _rng("dtd")
    data = root / "dtd" / "dtd"
    (data / "labels").mkdir(parents=True)
    official = {}
    n = 0
    for split in ("train", "val", "test"):
        lines, labels = [], []
        for c, name in enumerate(DTD_CLASSES):
            for _ in range(per_class):
                n += 1
                _jpg(data / "images" / name / f"{name}_{n:04d}.jpg", rng)
                lines.append(f"{name}/{name}_{n:04d}.jpg")
                labels.append(c)
        for partition in range(1, 11):
            (data / "labels" / f"{split}{partition}.txt").write_text("\n".join(lines) + "\n")
        official[split] = labels
    return Written(DTD_CLASSES, 47, official)


# ---- EuroSAT: eurosat/2750/<Class>/<Class>_<n>.jpg (ImageFolder, no official split) ----------------

EUROSAT_CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]


def write_eurosat(root: Path, per_class: int = 5) -> Written:
    rng = _rng("eurosat")
    for name in EUROSAT_CLASSES:
        for i in range(per_class):
            _jpg(root / "eurosat" / "2750" / name / f"{name}_{i + 1}.jpg", rng, size=16)
    return Written(EUROSAT_CLASSES, 10, {"all": _labels(10, per_class)})


# ---- GTSRB: gtsrb/GTSRB/Training/000NN/*.ppm; Final_Test/Images/*.ppm + gtsrb/GT-final_test.csv -----


def write_gtsrb(root: Path, per_class_train: int = 2, per_class_test: int = 1) -> Written:
    rng = _rng("gtsrb")
    base = root / "gtsrb"
    train_labels = []
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        for i in range(per_class_train):
            _jpg(folder / f"00000_{i:05d}.ppm", rng, ext="PPM")
            train_labels.append(c)
        (folder / f"GT-{c:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    images = base / "GTSRB" / "Final_Test" / "Images"
    rows, test_labels = [], []
    for i, c in enumerate(_labels(43, per_class_test)[::-1]):  # the csv order is not class order
        _jpg(images / f"{i:05d}.ppm", rng, ext="PPM")
        rows.append([f"{i:05d}.ppm", 8, 8, 0, 0, 7, 7, c])
        test_labels.append(c)
    with open(base / "GT-final_test.csv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        writer.writerows(rows)
    return Written(None, 43, {"train": train_labels, "test": test_labels})


# ---- STL-10: stl10_binary/{train,test}_{X,y}.bin, column-major 96x96 images, labels 1..10 ----------

STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10(root: Path, per_class: dict[str, int] | None = None) -> Written:
    rng = _rng("stl10")
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    official, pixels = {}, []
    for split, per in (per_class or {"train": 2, "test": 1}).items():
        labels = _labels(10, per)
        images = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)
        images.transpose(0, 3, 2, 1).tofile(base / f"{split}_X.bin")  # HWC -> C, W, H (column-major)
        (np.array(labels, dtype=np.uint8) + 1).tofile(base / f"{split}_y.bin")
        official[split] = labels
        pixels.append((split, 5, images[5]))
    (base / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return Written(STL10_CLASSES, 10, official, pixels)


# ---- FER2013: fer2013/train.csv ("emotion,pixels", 48x48 gray as space-separated ints) -------------


def write_fer2013(root: Path, per_class: int = 4) -> Written:
    rng = _rng("fer2013")
    base = root / "fer2013"
    base.mkdir(parents=True)
    labels = _labels(7, per_class)
    images = rng.integers(0, 256, (len(labels), 48, 48), dtype=np.uint8)
    with open(base / "train.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["emotion", "pixels"])
        for label, img in zip(labels, images, strict=True):
            writer.writerow([label, " ".join(map(str, img.ravel().tolist()))])
    gray = np.repeat(images[9][:, :, None], 3, axis=2)
    return Written(
        ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
        7,
        {"all": labels},
        [("all", 9, gray)],
    )


# ---- PCAM: pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 -----------------------------


def write_pcam(root: Path, per_class: int = 3) -> Written:
    import h5py

    rng = _rng("pcam")
    base = root / "pcam"
    base.mkdir(parents=True)
    official, pixels = {}, []
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        labels = _labels(2, per_class)
        images = rng.integers(0, 256, (len(labels), 96, 96, 3), dtype=np.uint8)
        with h5py.File(base / f"camelyonpatch_level_2_split_{name}_x.h5", "w") as f:
            f["x"] = images
        with h5py.File(base / f"camelyonpatch_level_2_split_{name}_y.h5", "w") as f:
            f["y"] = np.array(labels, dtype=np.uint8).reshape(-1, 1, 1, 1)
        official[split] = labels
        pixels.append((split, 4, images[4]))
    return Written(["no tumour", "tumour"], 2, official, pixels)


# ---- Country211: country211/{train,valid,test}/<ISO code>/*.jpg (ImageFolder per split) ------------


def write_country211(root: Path, per_class: int = 1) -> Written:
    rng = _rng("country211")
    # 211 two-letter folder names standing in for the ISO 3166 codes (ImageFolder sorts them)
    codes = [a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"][:211]
    official = {}
    for split, ours in (("train", "train"), ("valid", "val"), ("test", "test")):
        for code in codes:
            for i in range(per_class):
                _jpg(root / "country211" / split / code / f"{i}.jpg", rng, size=4)
        official[ours] = _labels(211, per_class)
    return Written(codes, 211, official)


# ---- CIFAR-10-C: CIFAR-10-C/<corruption>.npy (5 x N, 32, 32, 3) + labels.npy ---------------------


def write_cifar10c(root: Path, families: tuple[str, ...], n: int = 100) -> dict[str, np.ndarray]:
    """Released layout with ``n`` images per severity (the real files have 10,000)."""
    rng = _rng("cifar10c")
    base = root / "CIFAR-10-C"
    base.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(n) % 10, 5).astype(np.uint8)
    np.save(base / "labels.npy", labels)
    arrays = {}
    for family in families:
        arrays[family] = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
        np.save(base / f"{family}.npy", arrays[family])
    arrays["labels"] = labels
    return arrays


def write_domainnet(
    root: Path,
    domain: str,
    classes: tuple[str, ...] = ("aircraft_carrier", "airplane", "zebra"),
    per_class: int = 7,
) -> Path:
    """``<root>/domainnet/<domain>/<class>/<domain>_<n>.jpg`` as the VisDA-2019 zips unzip."""
    rng = _rng(f"domainnet-{domain}")
    base = root / "domainnet" / domain
    for c in classes:
        for i in range(per_class):
            _jpg(base / c / f"{domain}_{(i * 37) % 101:03d}_{i:06d}.jpg", rng)
    return base


WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "flowers102": write_flowers102,
    "pets": write_pets,
    "dtd": write_dtd,
    "eurosat": write_eurosat,
    "gtsrb": write_gtsrb,
    "stl10": write_stl10,
    "fer2013": write_fer2013,
    "pcam": write_pcam,
    "country211": write_country211,
}
