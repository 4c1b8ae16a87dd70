"""Where probekit keeps converted weights, feature stores and reports.

Everything generated lives under one data directory: ``$PROBEKIT_DATA`` when set, else the
``data/`` folder of the source checkout (an editable install), else ``~/.cache/probekit``.
Reports go to ``$PROBEKIT_REPORTS`` or the checkout's ``reports/``.
"""

from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _checkout_dir(name: str) -> Path | None:
    candidate = _CHECKOUT / name
    if (_CHECKOUT / "pyproject.toml").is_file() and candidate.is_dir():
        return candidate
    return None


def data_dir() -> Path:
    """Root of generated data: converted weights, feature stores, provisioned assets."""
    env = os.environ.get("PROBEKIT_DATA")
    root = Path(env) if env else (_checkout_dir("data") or Path.home() / ".cache" / "probekit")
    root.mkdir(parents=True, exist_ok=True)
    return root


def weights_dir() -> Path:
    """Converted model weights (safetensors)."""
    path = data_dir() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def features_dir() -> Path:
    """Feature stores, one directory per content hash."""
    path = data_dir() / "features"
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_dir() -> Path:
    """Rendered HTML reports and their tidy result tables."""
    env = os.environ.get("PROBEKIT_REPORTS")
    root = Path(env) if env else (_checkout_dir("reports") or Path.cwd() / "reports")
    root.mkdir(parents=True, exist_ok=True)
    return root


def model_folder(model: str) -> str:
    """The folder a sweep keeps one model's reports and tables in (``<out>/<model folder>/results``):
    the model's name with every character other than letters, digits, ``.``, ``_`` and ``-`` made a
    ``-`` (``random:dinov2_vits14`` -> ``random-dinov2_vits14``), so it is one safe path part and a
    relative link a browser does not read as a URL scheme."""
    import re

    folder = re.sub(r"[^A-Za-z0-9._-]+", "-", str(model)).strip("-.")
    if not folder:
        raise ValueError(f"model name {model!r} has no letters or digits to name its folder")
    return folder
