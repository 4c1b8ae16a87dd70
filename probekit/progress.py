"""Progress bars for anything that takes more than a few seconds.

``tqdm.auto`` draws a widget in Jupyter and a text bar elsewhere. Its notebook flavour ignores
the ``TQDM_DISABLE`` environment variable (it always passes ``disable`` itself), so batch runs,
which set that variable, would print stale ``0%`` bars into reports; this wrapper honours it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def disabled_by_env() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no bars (``probekit suite`` sets it for report runs)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any):
    """A ``tqdm.auto`` bar, off when ``enabled`` is false or ``TQDM_DISABLE`` is set."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled or disabled_by_env(), **kwargs)
