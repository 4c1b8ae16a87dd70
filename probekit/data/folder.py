"""Any folder of images as a dataset: ``folder:/path``.

Layouts understood, checked in this order:

* ``root/<split>/<class>/**/image`` with split folders among ``train``, ``val``, ``test``: the
  official split is kept; a folder with only ``train`` and ``val`` (ImageNet, Imagenette) uses
  ``val`` as the held-out test split and carves its own val out of train;
* ``root/<class>/**/image`` (torchvision ``ImageFolder``): classes are the sorted sub-folder names;
* ``root/image`` with no class sub-folders: one class named after the folder (a reference set).

Files are taken by extension (:data:`images.IMAGE_EXTENSIONS`); other files, and files lying
beside class folders, are counted in the provenance as ``ignored_files``. Damaged image files are found later, when a split is selected.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import EmptyDatasetError
from .images import is_image_file
from .source import FileLoader, Source

SPLIT_DIRS = ("train", "val", "test")


def _images_under(directory: Path) -> tuple[list[Path], int]:
    found: list[Path] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if is_image_file(name):
                found.append(Path(dirpath) / name)
            else:
                ignored += 1
    return found, ignored


def _subdirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_layout(root: Path) -> tuple[list[str], list[list[Path]], int]:
    """Class names and, per class, its image files; flat folders give one class."""
    classes, files, ignored = [], [], 0
    for sub in _subdirs(root):
        images, skipped = _images_under(sub)
        ignored += skipped
        if images:
            classes.append(sub.name)
            files.append(images)
    loose = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if not classes:
        flat = [p for p in loose if is_image_file(p.name)]
        if flat:
            return [root.name], [flat], ignored + len(loose) - len(flat)
    return classes, files, ignored + len(loose)  # files beside the class folders have no class


def _first_mode(path: Path) -> str:
    try:
        with Image.open(path) as img:
            return img.mode
    except (OSError, SyntaxError, ValueError):  # a broken first file is reported when selected
        return "unknown"


def folder_source(path: str | Path) -> Source:
    """Scan a folder of class sub-folders (or split folders of class sub-folders) into a Source."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise EmptyDatasetError(
            f"folder dataset {str(path)!r} is not a directory. Give the path of a folder whose "
            "sub-folders are the classes, e.g. folder:/data/imagenette2/train."
        )
    split_dirs = [d for d in SPLIT_DIRS if (root / d).is_dir()]
    official: list[str] | None = None
    if "train" in split_dirs and len(split_dirs) >= 2:
        per_split = {d: _class_layout(root / d) for d in split_dirs}
        classes = sorted({c for names, _, _ in per_split.values() for c in names})
        index = {c: i for i, c in enumerate(classes)}
        paths, labels, official = [], [], []
        ignored = 0
        has_test = "test" in split_dirs
        for d, (names, files, skipped) in per_split.items():
            ignored += skipped
            kind = d if has_test else ("test" if d == "val" else d)
            for name, images in zip(names, files):
                paths += images
                labels += [index[name]] * len(images)
                official += [kind] * len(images)
    else:
        classes, files, ignored = _class_layout(root)
        paths = [p for images in files for p in images]
        labels = [i for i, images in enumerate(files) for _ in images]
    if not paths:
        raise EmptyDatasetError(
            f"folder {root} holds no image files (.jpg, .png, ...). "
            "Put images in one sub-folder per class, e.g. root/cat/001.jpg and root/dog/002.jpg."
        )
    keys = [p.relative_to(root).as_posix() for p in paths]
    rule = "official split folders" if official is not None else "class sub-folders"
    provenance = {
        "source": "folder",
        "path": str(root),
        "package": None,
        "version": None,
        "licence": "as given by the owner of the folder",
        "url": None,
        "layout": rule,
        "image_mode": _first_mode(paths[0]) + " (first file; all converted to RGB)",
        "ignored_files": ignored,
    }
    return Source(
        name=f"folder:{root}",
        keys=keys,
        labels=np.array(labels, dtype=np.int64),
        classes=classes,
        load=FileLoader(list(paths)),
        provenance=provenance,
        official_split=np.array(official) if official is not None else None,
        paths=list(paths),
    )
