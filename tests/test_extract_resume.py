"""Real interruptions and real processes: SIGKILL mid-run then resume; torchrun with 2 CPU ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from probekit.extract import extract
from probekit.store import FeatureStore

sys.path.insert(0, str(Path(__file__).parent))
from test_extract import PhotoSet, tiny_backbone

torch.set_num_threads(1)

N, BATCH = 24, 2
JOB = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_extract import PhotoSet, tiny_backbone
from probekit.extract import extract
store = extract(tiny_backbone(), PhotoSet(n={N}, sleep=float(sys.argv[2])), batch_size={BATCH},
                storage_dtype="float32", root=sys.argv[1], checkpoint_s=0, progress=False)
print("STORE", store.path, store.complete)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env["PYTHONPATH"] = str(Path(__file__).parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _reference(root: Path) -> FeatureStore:
    return extract(
        tiny_backbone(), PhotoSet(n=N), batch_size=BATCH, storage_dtype="float32", root=root, progress=False
    )


def assert_same_store(a: FeatureStore, b: FeatureStore) -> None:
    assert a.path.name == b.path.name  # same content hash
    assert a.complete and b.complete and list(a) == list(b)
    assert a.meta["passes"] == b.meta["passes"]
    np.testing.assert_array_equal(a.labels, b.labels)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_store(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(job), str(root), "0.1"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    done_at_kill = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            metas = list(root.glob("*/meta.json"))
            if metas:
                try:
                    passes = json.loads(metas[0].read_text())["passes"]
                except (json.JSONDecodeError, KeyError):
                    passes = []
                done = sum(b - a for a, b in passes[0]["done"]) if passes else 0
                if done >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    done_at_kill = done
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not done_at_kill:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed = FeatureStore.open(next(root.iterdir()))
    assert not killed.complete and len(killed) == 0  # nothing is listed before it is complete
    done_chunks = killed.done_chunks(0)
    assert 3 <= len(done_chunks) < N // BATCH

    resumed_now = _reference(root)  # run it again (in this process), same arguments
    assert resumed_now.path == killed.path
    resumed = FeatureStore.open(killed.path)
    last = resumed.meta["runs"][-1]
    assert last["rows"] == N - BATCH * len(done_chunks)  # only the missing chunks were computed
    assert_same_store(resumed, _reference(tmp_path / "reference"))


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="torchrun not installed next to this python",
)
def test_torchrun_two_cpu_ranks_write_the_same_store_as_one(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    root = tmp_path / "ranks"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(job), str(root), "0"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("STORE") == 2 and "False" not in out.stdout
    store = FeatureStore.open(next(root.iterdir()))
    (run,) = store.meta["runs"]
    assert run["world_size"] == 2 and run["rows"] == N
    assert [r["rank"] for r in run["ranks"]] == [0, 1] and sum(r["rows"] for r in run["ranks"]) == N
    assert not (store.path / "progress").exists() or not any((store.path / "progress").iterdir())
    assert_same_store(store, _reference(tmp_path / "reference"))
