"""Shared fixtures: the embedded model (converted once per session), small real images, the report checker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


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
        script = Path(__file__).resolve().parent.parent / "scripts" / "check_reports.py"
        return subprocess.run(
            [sys.executable, str(script), str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    return run
