"""Provenance for reports: library versions, device, git sha, seeding.

Every notebook records where its numbers came from through :func:`probekit.report.run_info`,
which builds on the functions here. Nothing in this module imports torch at module load; torch is
imported only when a function needs it, so ``import probekit.report`` stays cheap.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent

# Distribution names whose versions every report records, in display order.
TRACKED_PACKAGES: tuple[str, ...] = ("probekit", "torch", "timm", "numpy", "scikit-learn")


def package_version(dist: str) -> str:
    """Installed version of a distribution, or ``"not installed"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_sha(short: bool = True) -> str:
    """Commit of the probekit checkout (``+dirty`` when tracked files changed), or ``"unknown"``."""
    if not (_CHECKOUT / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "rev-parse", "--short" if short else "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def device_name() -> str:
    """The accelerator torch would use (``cuda:0 (NVIDIA H100 ...)``) or the CPU description."""
    try:
        import torch
    except ImportError:
        return f"cpu ({platform.processor() or platform.machine()})"
    if torch.cuda.is_available():
        return f"cuda:0 ({torch.cuda.get_device_name(0)})"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    threads = torch.get_num_threads()
    return f"cpu ({platform.machine()}, {threads} torch threads)"


def runtime_versions() -> dict[str, str]:
    """Python, torch, timm, numpy and platform versions: what a feature store records it was made with."""
    import numpy as np
    import timm
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def environment_info() -> dict[str, str]:
    """Versions of the tracked packages plus python, platform, device and git sha."""
    info = {name: package_version(name) for name in TRACKED_PACKAGES}
    info["python"] = sys.version.split()[0]
    info["platform"] = platform.platform(terse=True)
    info["device"] = device_name()
    info["git_sha"] = git_sha()
    return info


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (every device); optionally ask torch for determinism.

    ``deterministic=True`` also calls ``torch.use_deterministic_algorithms(True)`` and sets the
    cuBLAS workspace variable (harmless where it is not needed). Returns the seed.
    """
    seed = int(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # affects subprocesses only; recorded for them
    import numpy as np

    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:
        return seed
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return seed
