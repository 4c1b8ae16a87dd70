"""``--executor slurm`` without a cluster: as far as it can be exercised on one machine.

What is exercised: the options of a config's ``executor:`` section and the command line become the
``#SBATCH`` lines of the script submitit generates (partition, GPUs, CPUs, time, memory, setup lines);
a run is submitted through :func:`probekit.suite_jobs.make_executor` to an ``sbatch`` on PATH (a
stand-in script that keeps the batch script and answers with a job id, as ``sbatch`` does); the
pickled job is then run the way the batch script runs it on a compute node (``python -m
submitit.core._submit`` with the SLURM job variables set), and its result (the run's record, its HTML
page) is read back as submitit reads it. What is not: SLURM itself (queueing, ``srun`` placing the
task on a node, ``sacct`` polling for the job's state, ``scancel``); `probekit suite --executor slurm`
polls and cancels through submitit's own SlurmJob for those.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probekit.suite import load_config, plan_runs
from probekit.suite_jobs import (
    ExecutorError,
    executor_options,
    job_environment,
    make_executor,
    run_job,
    slurm_parameters,
)

ROOT = Path(__file__).resolve().parent.parent
FAKE_SBATCH = """#!/bin/sh
# stands in for SLURM's sbatch: keep the batch script, answer as sbatch does
cp "$1" "{keep}"
echo "Submitted batch job 4242"
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "slurm.yaml"
    path.write_text(
        f"""
executor: {{kind: slurm, partition: gpu, gpus: 1, cpus: 8, time: 90, mem_gb: 64,
            setup: ["module load cuda"], additional: {{mail_type: END}}}}
defaults: {{seed: 0}}
runs:
  - name: check
    notebook: {ROOT / "notebooks" / "00_model_check.py"}
    parameters: {{model: vit_tiny_patch16_224, pretrained: false, image_size: 32, depth: 2, n_images: 20}}
"""
    )
    return path


def _sbatch_lines(script: str) -> set[str]:
    return {line.strip() for line in script.splitlines() if line.startswith("#SBATCH")}


def test_config_and_command_line_make_the_sbatch_lines(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    config = load_config(_config(tmp_path))
    options = executor_options(config.executor, {"time": 120, "partition": None})  # the command line wins
    script = _make_sbatch_string(
        command="true", folder=tmp_path, **slurm_parameters(options, "probekit-check")
    )
    lines = _sbatch_lines(script)
    assert {
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=120",
        "#SBATCH --mem=64GB",
        "#SBATCH --job-name=probekit-check",
        "#SBATCH --mail-type=END",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
    } <= lines
    assert "module load cuda" in script
    assert job_environment(options) == {}  # threads are the cluster's business (--cpus-per-task)


def test_without_slurm_the_error_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    options = executor_options({"kind": "slurm"})
    with pytest.raises(ExecutorError, match="needs SLURM's sbatch and srun on PATH.*--executor local"):
        make_executor(options, tmp_path / "logs", "x")


@pytest.mark.slow
def test_a_run_submitted_to_sbatch_runs_as_the_batch_script_would(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kept = tmp_path / "submitted.sh"
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(keep=kept))
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    config = load_config(_config(tmp_path))
    out = tmp_path / "reports"
    (spec,), params = plan_runs(config, out)
    options = executor_options(config.executor)
    executor = make_executor(options, out / "logs" / spec.short_name, "probekit-check")
    job = executor.submit(run_job, spec, params[spec.name], out, config, job_environment(options))
    assert job.job_id == "4242"
    script = kept.read_text()
    assert {"#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90"} <= _sbatch_lines(
        script
    )
    assert "#SBATCH --output=" + str(out / "logs" / "check" / "%j_0_log.out") in _sbatch_lines(script)
    assert "-m submitit.core._submit" in script and job.paths.submitted_pickle.is_file()

    # on a compute node, srun starts this command (stdout to the log) with SLURM's job variables set
    env = {
        **os.environ,
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_NODELIST": "localhost",
    }
    proc = subprocess.run(
        [sys.executable, "-u", "-m", "submitit.core._submit", str(job.paths.folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from submitit.core.utils import pickle_load

    outcome, result = pickle_load(job.paths.result_pickle)
    assert outcome == "success", result
    assert result.status == "ok" and result.name == "check" and (out / result.html).is_file()
    assert "probekit job: check (00_model_check.py)" in proc.stdout  # srun sends it to %j_0_log.out
