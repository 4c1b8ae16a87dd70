"""The analysis-result cache: same inputs give the stored value, any change computes afresh."""

from __future__ import annotations

import pandas as pd

from probekit.cache import cached, code_version, import_closure, result_key


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


def _write_package(root, files: dict[str, str]):
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)


def test_a_result_is_keyed_on_the_code_it_runs_and_not_on_the_rest(tmp_path):
    # a package of five modules: a imports b (relative), b imports c inside a function, d is unrelated
    pkg = tmp_path / "pkg"
    _write_package(
        pkg,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "def f():\n    import pkg.c\n    return pkg.c.X\n",
            "c.py": "X = 1\n",
            "d.py": "from .a import b\nY = 2\n",
        },
    )
    assert import_closure("pkg.a", pkg) == {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    assert import_closure("pkg.d", pkg) == {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    before = code_version("pkg.a", pkg), code_version("pkg.d", pkg), code_version(None, pkg)
    (pkg / "d.py").write_text("from .a import b\nY = 3\n")  # outside a's code
    code_version.cache_clear()
    after_d = code_version("pkg.a", pkg), code_version("pkg.d", pkg), code_version(None, pkg)
    assert after_d[0] == before[0] and after_d[1] != before[1] and after_d[2] != before[2]
    (pkg / "c.py").write_text("X = 2\n")  # inside a's code, two imports away
    code_version.cache_clear()
    assert code_version("pkg.a", pkg) != before[0]
    code_version.cache_clear()


def test_probekit_results_survive_edits_to_code_that_cannot_change_them():
    shift, probing = import_closure("probekit.studies.shift"), import_closure("probekit.studies.probing")
    # shift scores do not depend on the probes; no result depends on charts, reports or the suite runner
    assert "probekit.shift.mmd" in shift and "probekit.probes.softmax" not in shift
    assert {"probekit.probes.softmax", "probekit.probes.linear", "probekit.shift.mmd"} <= probing
    for unrelated in ("probekit.charts", "probekit.render", "probekit.suite", "probekit.cli"):
        assert unrelated not in shift | probing | import_closure("probekit.studies.fusion")
