"""Shared fixtures: the embedded model (converted once per session), the suite run as a user runs it,
the report checker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def embedded_backbone():
    """The embedded DINOv2-S/14 at the CPU default size (112 px)."""
    from probekit.models import load_model

    return load_model("dinov2_vits14", image_size=112, device="cpu")


@pytest.fixture
def check_reports():
    """Runs ``scripts/check_reports.py`` on a reports folder in headless Chromium (as `make check-reports`
    does) and returns the finished process; a missing browser fails with the install command."""

    def run(folder: Path) -> subprocess.CompletedProcess:
        if shutil.which("chromium") is None:
            pytest.fail("chromium is not installed: run `make system-deps` (Debian package chromium)")
        script = ROOT / "scripts" / "check_reports.py"
        return subprocess.run(
            [sys.executable, str(script), str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def run_suite():
    """Runs ``probekit suite <config> --out <out> [extra...]`` from the checkout in a subprocess, every
    analysis computed (``PROBEKIT_NO_RESULT_CACHE=1``; stored features are reused), and returns the
    finished process."""

    def run(config: Path, out: Path, *extra: str, timeout: int = 1500) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "probekit.cli", "suite", str(config), "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, "PROBEKIT_NO_RESULT_CACHE": "1"},
            check=False,
        )

    return run
