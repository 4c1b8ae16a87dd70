"""Fault injection along the pipeline, from the command line as a user runs it.

Stages: load model, load dataset, extract, probe, render, index. At each, the faults a user meets
(wrong or broken weights, offline hub, broken images, bad counts, damaged stores, full or read-only
disks, bad suite configs) are injected on real files, and each must give a non-zero exit with one
message naming the cause and the fix, no traceback (unless ``--debug``), and leave every result
computed before the fault present and valid. Small random-init ViTs and 32 px images keep it fast;
the suite runs (a kernel per notebook) are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from probekit.cli import main
from probekit.store import FeatureStore, key_filename

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "test_vit", "--random-init", "--size", "32", "--device", "cpu", "--no-progress"]
ROOT_FLAG = "--root"
CAN_MOUNT = os.geteuid() == 0 and sys.platform == "linux"


def probekit(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; an uncaught exception (a raw traceback for a user) fails the test."""
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def probekit_subprocess(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m probekit.cli`` as a separate process, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "probekit.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A real small file system: ``mount(size, readonly)`` returns its folder; unmounted afterwards."""
    if not CAN_MOUNT:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mounted: list[Path] = []

    def mount(size: str, readonly: bool = False) -> Path:
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=False).returncode:
            pytest.skip("tmpfs mount refused (no mount privilege in this container)")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=False)


def _extract(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "extract",
        *TINY,
        "--dataset",
        "digits",
        "--limit",
        "24",
        "--batch-size",
        "8",
        "--sites",
        "act",
        "norm",
        "--layers",
        "-1",
        "--pools",
        "cls",
        ROOT_FLAG,
        str(tmp_path / "features"),
        *extra,
    ]


def _snapshot(store_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store_dir.glob("*.npy"))}


# ---- stage 1: load model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory) -> dict[str, Path]:
    import timm

    d = tmp_path_factory.mktemp("weights")
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), d / "resnet18.pth")
    sd = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32).state_dict()
    sd = {k: v.contiguous() for k, v in sd.items()}
    save_file(sd, str(d / "good.safetensors"))
    del sd["blocks.11.attn.qkv.weight"]
    save_file(sd, str(d / "missing_one.safetensors"))
    (d / "garbage.safetensors").write_bytes(os.urandom(2048))
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize(
    ("name", "cause", "fix"),
    [
        (
            "resnet18",
            r"150 of the model's 150 tensors are missing.*conv1.weight",
            r"different architecture: pass the timm",
        ),
        (
            "missing_one",
            r"missing from the file \(blocks.11.attn.qkv.weight\)",
            r"Save the complete state dict",
        ),
        (
            "garbage",
            r"garbage.safetensors is not a readable safetensors file",
            r"--weights takes a .safetensors file",
        ),
    ],
)
def test_load_model_refuses_weights_that_do_not_fit(
    tmp_path, capsys, weights_files, name, cause, fix
) -> None:
    argv = [
        "extract",
        "--model",
        "vit_tiny_patch16_224",
        "--weights",
        weights_files[name],
        "--size",
        "32",
        "--dataset",
        "digits",
        "--limit",
        "8",
        "--device",
        "cpu",
        ROOT_FLAG,
        tmp_path,
        "--no-progress",
    ]
    rc, out, err = probekit(capsys, *argv)
    assert rc != 0 and out == ""
    assert err.startswith("probekit extract: error: ") and err.count("\n") == 1
    assert re.search(cause, err) and re.search(fix, err), err
    assert not list(tmp_path.iterdir())  # nothing extracted from a model that did not load


def test_load_model_good_weights_file_is_used(tmp_path, capsys, weights_files) -> None:
    argv = [
        "extract",
        "--model",
        "vit_tiny_patch16_224",
        "--weights",
        weights_files["good"],
        "--size",
        "32",
        "--dataset",
        "digits",
        "--limit",
        "8",
        "--sites",
        "norm",
        "--pools",
        "cls",
        "--device",
        "cpu",
        ROOT_FLAG,
        tmp_path,
        "--no-progress",
    ]
    rc, out, _ = probekit(capsys, *argv)
    assert rc == 0 and FeatureStore.open(out.splitlines()[-1]).complete


def test_load_model_offline_hub_names_options_that_exist(tmp_path) -> None:
    res = probekit_subprocess(
        "extract",
        "--model",
        "vit_tiny_patch16_224.augreg_in21k",
        "--dataset",
        "digits",
        "--limit",
        "4",
        ROOT_FLAG,
        tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PROBEKIT_DATA": str(tmp_path)},
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "could not fetch pretrained weights" in res.stderr and "--weights PATH" in res.stderr
    assert "--model dinov2_vits14" in res.stderr and "--random-init" in res.stderr
    for command in ("extract", "layers"):  # the options the message names exist on the commands
        helptext = probekit_subprocess(command, "--help").stdout
        assert "--weights PATH" in helptext and "--random-init" in helptext


def test_no_traceback_unless_debug(tmp_path, weights_files) -> None:
    argv = [
        "extract",
        "--model",
        "vit_tiny_patch16_224",
        "--weights",
        weights_files["garbage"],
        "--size",
        "32",
        "--dataset",
        "digits",
        "--device",
        "cpu",
        ROOT_FLAG,
        tmp_path,
    ]
    quiet = probekit_subprocess(*argv)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr and "garbage.safetensors" in quiet.stderr
    loud = probekit_subprocess(*argv, "--debug")
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "WeightsFileError" in loud.stderr


# ---- stage 2: load dataset ----------------------------------------------------------------------


def test_load_dataset_bad_counts_are_refused_before_anything_is_created(tmp_path, capsys) -> None:
    for flag, value in (
        ("--limit", "-5"),
        ("--limit", "0"),
        ("--batch-size", "0"),
        ("--max-per-class", "-1"),
    ):
        argv = _extract(tmp_path)
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
        rc, _, err = probekit(capsys, *argv)
        assert rc == 2 and f"{flag} {value}: must be at least" in err, err
    assert not (tmp_path / "features").exists()


def test_load_dataset_of_only_broken_files(tmp_path, capsys) -> None:
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        (tmp_path / "imgs" / cls / "x.png").write_bytes(b"not a png")
    rc, _, err = probekit(
        capsys,
        "extract",
        *TINY,
        "--dataset",
        f"folder:{tmp_path / 'imgs'}",
        "--split",
        "all",
        ROOT_FLAG,
        tmp_path / "features",
    )
    assert rc == 2 and "no usable images (2 broken files skipped, e.g." in err and "x.png" in err
    assert "Replace or remove the broken files" in err and "split='all'" not in err


def test_extract_summary_counts_skipped_files(tmp_path, capsys) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 80, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG truncated")
    rc, out, _ = probekit(
        capsys,
        "extract",
        *TINY,
        "--dataset",
        f"folder:{tmp_path / 'imgs'}",
        "--split",
        "all",
        "--sites",
        "norm",
        "--pools",
        "cls",
        ROOT_FLAG,
        tmp_path / "features",
    )
    assert rc == 0 and "6 images; 1 broken or unreadable files skipped (listed in" in out
    meta = FeatureStore.open(out.splitlines()[-1]).meta
    assert meta["skipped_files"] == 1 and meta["skipped_examples"][0]["path"].endswith("broken.png")


# ---- stage 3: extract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", ["truncated_npy", "deleted_npy", "deleted_labels", "empty_meta", "truncated_meta"]
)
def test_extract_repairs_a_damaged_store_bit_identically(tmp_path, capsys, fault) -> None:
    rc, out, _ = probekit(capsys, *_extract(tmp_path))
    path = Path(out.splitlines()[-1])
    before = _snapshot(path)
    target = {
        "truncated_npy": key_filename("norm/cls"),
        "deleted_npy": key_filename("blocks.5.act/cls"),
        "deleted_labels": "labels.npy",
        "empty_meta": "meta.json",
        "truncated_meta": "meta.json",
    }[fault]
    f = path / target
    if fault.startswith("deleted"):
        f.unlink()
    elif fault == "empty_meta":
        f.write_text("")
    else:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(Exception, match=rf"{target}: .*Repair it with `probekit extract --model test_vit"):
        FeatureStore.open(path)  # a reader is told which file and which command
    rc, out, err = probekit(capsys, *_extract(tmp_path))
    assert rc == 0 and f"repairing {path.name}: {target}" in err and "complete" in out
    assert _snapshot(path) == before  # only the damaged file redone, to the same bytes
    store = FeatureStore.open(path)
    assert store.complete and sorted(store) == ["blocks.5.act/cls", "norm/cls"]


def test_reading_a_damaged_store_names_the_file_without_a_traceback(tmp_path, capsys) -> None:
    _, out, _ = probekit(capsys, *_extract(tmp_path))
    path = Path(out.splitlines()[-1])
    (path / key_filename("norm/cls")).write_bytes(b"")
    code = f"from probekit.store import FeatureStore\nFeatureStore.open({str(path)!r})['norm/cls']"
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "DamagedStoreError" in res.stderr and "norm__cls.npy: truncated: 0 bytes" in res.stderr


def test_extract_on_a_full_disk_keeps_what_was_extracted(tmp_path, capsys, tmpfs) -> None:
    root = tmpfs("160k")
    argv = [
        "extract",
        *TINY,
        "--dataset",
        "digits",
        "--limit",
        "200",
        "--sites",
        "norm",
        "--pools",
        "cls",
        ROOT_FLAG,
        root,
    ]
    rc, out, _ = probekit(capsys, *argv)
    path = Path(out.splitlines()[-1])
    before = _snapshot(path)
    rc, out, err = probekit(
        capsys, *[a if a != "norm" else "act" for a in argv]
    )  # all 6 blocks' act: too big
    assert rc == 2 and "not enough disk space for the feature store" in err and "are free" in err
    assert "features already extracted are kept" in err and "Traceback" not in err
    assert (
        _snapshot(path) == before
        and FeatureStore.open(path).complete
        and list(FeatureStore.open(path)) == ["norm/cls"]
    )


# ---- stage 4: probe -------------------------------------------------------------------------------


def test_probe_layers_counts_images_and_repairs_a_damaged_store(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path))
    argv = [
        "layers",
        "--model",
        "test_vit",
        "--random-init",
        "--size",
        "32",
        "--dataset",
        "digits",
        "--per-class",
        "4",
        "--pools",
        "cls",
    ]
    rc, out, _ = probekit(capsys, *argv)
    assert rc == 0 and "40 train / 40 test images" in out
    table = [line for line in out.splitlines() if "[" in line]  # the accuracy rows with their intervals
    victim = min((tmp_path / "features").glob("*__test__*")) / key_filename("blocks.3.resid_post/cls")
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated .npy inside a finished store
    rc, out2, err = probekit(capsys, *argv)
    assert rc == 0 and "repairing" in err and "blocks.3.resid_post__cls.npy: truncated" in err
    assert [line for line in out2.splitlines() if "[" in line] == table and len(table) == 7


def test_probe_on_non_finite_features_names_the_keys_and_the_fix(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path))
    argv = [
        "layers",
        "--model",
        "test_vit",
        "--random-init",
        "--size",
        "32",
        "--dataset",
        "digits",
        "--per-class",
        "3",
        "--pools",
        "cls",
    ]
    assert probekit(capsys, *argv)[0] == 0
    store = FeatureStore.open(min((tmp_path / "features").glob("*__train__*")))
    rows = store.load("norm/cls", mmap=True)
    np.memmap(
        store.path / key_filename("norm/cls"),
        dtype=rows.dtype,
        mode="r+",
        offset=store.meta["keys"]["norm/cls"]["offset"],
        shape=rows.shape,
    )[0, 0] = np.inf  # what a float16 overflow leaves
    rc, _, err = probekit(capsys, *argv)
    assert (
        rc == 2 and "hold inf or NaN values" in err and "norm/cls" in err and "--storage-dtype float32" in err
    )
    assert FeatureStore.open(store.path).complete  # the stores stay


# ---- stages 5 and 6: render and index (the suite) ---------------------------------------------------

QUICK = textwrap.dedent("""\
    # %% tags=["parameters"]
    seed: int = 0  # seed
    results_dir: str = ""  # folder for tables

    # %%
    import pandas as pd
    import probekit.report as report
    from probekit import charts
    report.run_info(dict(model="none", dataset="toy"), seed)
    report.headline("value", 1.5 + seed)
    charts.ranked_bars_with_ci(pd.DataFrame(dict(site=["a", "b"], value=[0.2, 0.4])))
    """)


def _suite_config(tmp_path: Path, names: list[str], **top) -> Path:
    import yaml

    (tmp_path / "quick.py").write_text(QUICK)
    runs = [
        {"name": n, "notebook": str(tmp_path / "quick.py"), "parameters": {"seed": i}}
        for i, n in enumerate(names)
    ]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"runs": runs, **top}))
    return path


def test_suite_config_faults_are_refused_by_check_which_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROBEKIT_REPORTS", str(tmp_path / "reports"))  # the default --out: must stay absent
    config = _suite_config(tmp_path, ["one"])
    (tmp_path / "bad.yaml").write_text(
        "runs:\n  - name: one\n    notebook: quick.py\n     parameters: {seed: 1}\n"
    )
    rc, _, err = probekit(capsys, "suite", tmp_path / "bad.yaml", "--check")
    assert (
        rc == 2 and "bad.yaml: invalid YAML at line 4, column 16: mapping values are not allowed here" in err
    )
    (tmp_path / "types.yaml").write_text(
        "runs:\n  - {name: one, notebook: quick.py, parameters: {seed: thirty-two}}\n"
        "  - {name: two, notebook: quick.py, parameters: {seed: -5, results_dir: 3}}\n"
    )
    rc, _, err = probekit(capsys, "suite", tmp_path / "types.yaml", "--check")
    assert rc == 2 and "run 'one': seed = 'thirty-two' is a str; the notebook declares int" in err
    assert "run 'two': seed = -5 is negative; give an int >= 0" in err
    rc, out, _ = probekit(capsys, "suite", config, "--check")
    assert rc == 0 and "every parameter name, type and range valid" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "quick.py", "suite.yaml", "types.yaml"]


def test_suite_read_only_out(tmp_path, capsys, tmpfs) -> None:
    ro = tmpfs("1m", readonly=True)
    config = _suite_config(tmp_path, ["one"])
    rc, _, err = probekit(capsys, "suite", config, "--out", ro / "reports")
    assert rc == 2 and f"cannot write the reports to {ro / 'reports'}: Read-only file system" in err
    assert "--out" in err
    rc, _, err = probekit(capsys, "suite", config, "--out", ro / "reports", "--check")
    assert rc == 2 and "is not writable" in err


@pytest.mark.slow
def test_suite_full_disk_stops_and_keeps_finished_runs(tmp_path, capsys, tmpfs) -> None:
    out = tmpfs("2m") / "reports"  # one page (~1.1 MB with the chart bundle) fits, a second does not
    config = _suite_config(tmp_path, ["one", "two", "three"])
    rc, _, err = probekit(capsys, "suite", config, "--out", out)
    assert rc == 2 and "suite stopped at run 'two': the disk holding" in err
    assert (
        "writing two.html needed 1.1 MiB" in err
        and "are free" in err
        and "Runs finished, rendered and listed: one" in err
    )
    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert [r["name"] for r in runs] == ["one"] and runs[0]["status"] == "ok"
    page = (out / "one.html").read_text()
    assert page.rstrip().endswith("</html>") and "vegaEmbed" in page  # complete, not truncated
    assert 'href="one.html"' in (out / "index.html").read_text()
    assert not (out / "two.html").exists() and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_suite_index_that_cannot_be_written_keeps_the_pages(tmp_path, capsys) -> None:
    out = tmp_path / "reports"
    (out / "index.html").mkdir(parents=True)  # the index cannot replace a folder
    config = _suite_config(tmp_path, ["one"])
    rc, _, err = probekit(capsys, "suite", config, "--out", out)
    assert rc == 2 and "index.html" in err and "Traceback" not in err
    assert (out / "one.html").read_text().rstrip().endswith("</html>")
    assert json.loads((out / "runs.json").read_text())["runs"][0]["name"] == "one"
