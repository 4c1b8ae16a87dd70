"""``probekit extract`` end to end on an offline dataset: summary, store path last, reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probekit.cli import main
from probekit.store import FeatureStore


def test_cli_extract_prints_the_store_path_last(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "extract",
        "--model",
        "test_vit",
        "--random-init",
        "--size",
        "32",
        "--dataset",
        "digits",
        "--limit",
        "12",
        "--sites",
        "act",
        "norm",
        "--layers",
        "-1",
        "--pools",
        "cls",
        "ap",
        "--device",
        "cpu",
        "--root",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    store = FeatureStore.open(Path(lines[-1]))
    assert store.complete and store.n == 12
    assert list(store) == ["blocks.5.act/cls", "blocks.5.act/ap", "norm/cls", "norm/ap"]
    assert store["blocks.5.act/ap"].shape == (12, 192) and np.isfinite(store["norm/cls"]).all()
    assert any("12 images" in line for line in lines)
    assert main(argv) == 0  # second run: same store, nothing recomputed
    assert capsys.readouterr().out.strip().splitlines()[-1] == lines[-1]
    assert len(FeatureStore.open(store.path).meta["runs"]) == 1
