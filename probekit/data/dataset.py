"""``ImageDataset``: one split of one dataset, optionally corrupted, as (RGB image, label) pairs.

Built by :func:`probekit.data.load_dataset`. It knows its labels without decoding any image,
carries full provenance (source package and version, licence, split rule, skipped files), and
names itself exactly through :meth:`ImageDataset.identity`, which feature stores are keyed on.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from PIL import Image

from .checks import FileChecker
from .corruptions import ALGORITHM_VERSION, CORRUPTIONS, IMAGENET_SIDE, PARAMETER_RULE, SCALE_RULE, corrupt
from .errors import EmptyDatasetError
from .source import Source
from .splits import select, split_candidates, split_rule

MAX_LISTED_SKIPS = 20  # provenance lists this many skipped files by name, and counts them all


class ImageDataset:
    """A deterministic, ordered list of samples: ``ds[i] -> (PIL RGB image, int label)``."""

    def __init__(
        self,
        source: Source,
        dataset_id: str,
        split: str = "train",
        seed: int = 0,
        max_per_class: int | None = None,
        corruption: tuple[str, int] | None = None,
        check_files: bool = True,
    ) -> None:
        self.source = source
        self.id = dataset_id
        self.split = split
        self.seed = int(seed)
        self.max_per_class = max_per_class
        self.corruption = corruption
        candidates = split_candidates(source.labels, source.official_split, split, self.seed)
        broken: dict[int, str] = {}
        is_broken = None
        checker = None
        if source.paths is not None and check_files:
            checker = FileChecker(source.name)

            def is_broken(i: int) -> bool:
                why = checker.error(source.paths[i])
                if why is not None:
                    broken[i] = why
                return why is not None

        self.indices, skipped = select(candidates, max_per_class, is_broken)
        if checker is not None:
            checker.save()
        self.skipped_files: list[str] = list(source.skipped_files) + [str(source.paths[i]) for i in skipped]
        self.skip_reasons: dict[str, str] = {str(source.paths[i]): broken[i] for i in skipped}
        if len(self.indices) == 0:
            raise EmptyDatasetError(
                f"dataset {dataset_id!r} split {split!r} has no usable images "
                f"({len(self.skipped_files)} broken files skipped"
                + (f", e.g. {next(iter(self.skip_reasons.items()))[0]}: {next(iter(self.skip_reasons.values()))}"
                   if self.skip_reasons else "")
                + "). Replace or remove the broken files"
                + ("." if split == "all" else ", or use split='all' (--split all) for more images.")
            )
        self.labels: np.ndarray = source.labels[self.indices].astype(np.int64)
        self.classes: list[str] = list(source.classes)
        self.keys: list[str] = [source.keys[i] for i in self.indices]
        self.provenance: dict[str, Any] = self._provenance(source)

    @property
    def skipped(self) -> int:
        """How many corrupt or unreadable image files were left out of this dataset."""
        return len(self.skipped_files)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.id} ({len(self)} samples)")
        index = int(self.indices[i])
        if self.corruption is None:
            return self.source.load(index), int(self.labels[i])
        # corrupted at the working scale (<= 224 px on the shorter side): a large file may be decoded smaller
        reduced = getattr(self.source.load, "reduced", None)
        img = reduced(index, IMAGENET_SIDE) if reduced is not None else self.source.load(index)
        family, severity = self.corruption
        return corrupt(img, family, severity, self.source.keys[index]), int(self.labels[i])

    def __repr__(self) -> str:
        return (f"ImageDataset(id={self.id!r}, split={self.split!r}, n={len(self)}, "
                f"classes={len(self.classes)}, skipped={self.skipped})")

    def sample_digest(self) -> str:
        """sha256 of the ordered (key, label) list, the source version and the corruption code
        (plus file sizes and mtimes for user folders)."""
        h = hashlib.sha256()
        header = (self.source.name, self.source.provenance.get("version"), ALGORITHM_VERSION)
        h.update(repr(header).encode())
        stamps = self._file_stamps()
        for i, (key, label) in enumerate(zip(self.keys, self.labels.tolist())):
            h.update(f"\n{key}\t{label}{stamps[i] if stamps else ''}".encode())
        return h.hexdigest()

    def _file_stamps(self) -> list[str] | None:
        """For user folders (no package version to go by): size and mtime of each selected file,
        so an image replaced under the same name changes the identity."""
        if self.source.paths is None or self.source.provenance.get("source") != "folder":
            return None
        stamps = []
        for i in self.indices.tolist():
            try:
                stat = self.source.paths[i].stat()
                stamps.append(f"\t{stat.st_size}\t{stat.st_mtime_ns}")
            except OSError:
                stamps.append("\tmissing")
        return stamps

    def identity(self) -> dict[str, Any]:
        """JSON-serialisable dict that names exactly this data (feature stores are keyed on it)."""
        return {
            "id": self.id,
            "split": self.split,
            "seed": self.seed,
            "max_per_class": self.max_per_class,
            "corruption": None if self.corruption is None else f"{self.corruption[0]}@{self.corruption[1]}",
            "n": len(self),
            "sha256": self.sample_digest(),
        }

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name, in class order."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts)}

    def _provenance(self, source: Source) -> dict[str, Any]:
        prov = dict(source.provenance)
        prov.update(
            dataset=self.id,
            split=self.split,
            split_rule=split_rule(source.official_split),
            seed=self.seed,
            max_per_class=self.max_per_class,
            n=len(self),
            n_classes=len(self.classes),
            class_counts=self.class_counts(),
            skipped_files=self.skipped,
            skipped_examples=[
                {"path": p, "why": self.skip_reasons.get(p, "unreadable")}
                for p in self.skipped_files[:MAX_LISTED_SKIPS]
            ],
            corruption=None,
        )
        if self.corruption is not None:
            family, severity = self.corruption
            prov["corruption"] = {
                "family": family,
                "severity": severity,
                "parameters": PARAMETER_RULE,
                "scale": SCALE_RULE,
                "implementation": f"probekit.data.corruptions v{ALGORITHM_VERSION} (numpy; see its docstring)",
                "families": list(CORRUPTIONS),
            }
        return prov
