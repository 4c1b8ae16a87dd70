"""The analysis-result cache: same inputs give the stored value, any change computes afresh."""

from __future__ import annotations

import pandas as pd

from probekit.cache import cached, result_key


def test_cached_returns_the_stored_result_and_keys_on_every_input(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path))
    monkeypatch.delenv("PROBEKIT_NO_RESULT_CACHE", raising=False)
    calls = []

    def compute(value: float):
        calls.append(value)
        return pd.DataFrame({"value": [value]})

    first = cached("probe", {"store": "abc", "C": 1.0}, lambda: compute(1.0))
    again = cached("probe", {"store": "abc", "C": 1.0}, lambda: compute(99.0))
    other = cached("probe", {"store": "abc", "C": 2.0}, lambda: compute(2.0))
    assert calls == [1.0, 2.0]
    pd.testing.assert_frame_equal(first, again)
    assert other["value"].iloc[0] == 2.0
    assert result_key("probe", {"C": 1.0}) != result_key("shift", {"C": 1.0})
    assert len(list((tmp_path / "cache" / "results" / "probe").glob("*.pkl"))) == 2


def test_cache_can_be_switched_off_and_survives_a_corrupt_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path))
    cached("k", {"a": 1}, lambda: 1)
    entry = next((tmp_path / "cache" / "results" / "k").glob("*.pkl"))
    entry.write_bytes(b"truncated")
    assert cached("k", {"a": 1}, lambda: 2) == 2  # unreadable entry: computed again
    monkeypatch.setenv("PROBEKIT_NO_RESULT_CACHE", "1")
    assert cached("k", {"a": 1}, lambda: 3) == 3
