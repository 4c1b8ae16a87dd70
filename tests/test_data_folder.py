"""Folder datasets and bad input: real broken files are skipped and counted, modes become RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from probekit.data import EmptyDatasetError, load_dataset, reference_set


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    """Keep the decode-check cache of these throw-away folders out of the real data dir."""
    monkeypatch.setenv("PROBEKIT_DATA", str(tmp_path / "probekit-data"))


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def write_class(folder: Path, n: int, colour: tuple[int, int, int], size=(20, 16)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, colour).save(folder / f"img_{i:02d}.png")


@pytest.fixture
def folder_with_broken_files(tmp_path) -> Path:
    root = tmp_path / "animals"
    write_class(root / "cat", 6, (200, 30, 30))
    write_class(root / "dog", 6, (30, 30, 200))
    good = png_bytes(Image.new("RGB", (64, 64), (10, 200, 10)))
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("this is not a JPEG, just text with a .jpg name\n")
    (root / "dog" / "README.txt").write_text("ignored: not an image extension")
    Image.new("RGB", (4, 4)).save(root / "loose.png")  # beside the class folders: no class
    return root


def test_broken_files_are_skipped_counted_and_reported(folder_with_broken_files):
    ds = load_dataset(f"folder:{folder_with_broken_files}", split="all")
    assert len(ds) == 12 and ds.classes == ["cat", "dog"]
    assert ds.skipped == 3
    assert sorted(Path(p).name for p in ds.skipped_files) == ["empty.png", "notes.jpg", "truncated.png"]
    assert ds.provenance["skipped_files"] == 3
    reasons = {Path(e["path"]).name: e["why"] for e in ds.provenance["skipped_examples"]}
    assert "truncated" in reasons["truncated.png"].lower()
    assert ds.provenance["ignored_files"] == 2
    for i in range(len(ds)):  # every remaining item decodes: extraction never meets a bad one
        img, label = ds[i]
        assert img.mode == "RGB" and img.size == (20, 16) and label in (0, 1)


def test_a_broken_file_is_replaced_by_the_next_member_of_its_class(folder_with_broken_files):
    ds = load_dataset(f"folder:{folder_with_broken_files}", split="all", max_per_class=6)
    assert np.bincount(ds.labels).tolist() == [6, 6]
    assert ds.skipped >= 1  # the capped walk met at least one broken file


def test_decode_checks_are_cached_and_redone_when_a_file_changes(folder_with_broken_files, tmp_path):
    dataset_id = f"folder:{folder_with_broken_files}"
    assert load_dataset(dataset_id, split="all").skipped == 3
    assert list((tmp_path / "probekit-data" / "cache" / "image_checks").glob("*.json"))
    repaired = folder_with_broken_files / "dog" / "empty.png"
    Image.new("RGB", (20, 16), (0, 0, 0)).save(repaired)
    ds = load_dataset(dataset_id, split="all")
    assert ds.skipped == 2 and len(ds) == 13


def test_grayscale_and_rgba_become_rgb_with_transparency_on_white(tmp_path):
    root = tmp_path / "modes"
    (root / "gray").mkdir(parents=True)
    (root / "alpha").mkdir()
    Image.new("L", (8, 8), 77).save(root / "gray" / "g.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    rgba.save(root / "alpha" / "a.png")
    ds = load_dataset(f"folder:{root}", split="all")
    by_class = {ds.classes[label]: np.asarray(img) for img, label in (ds[i] for i in range(len(ds)))}
    assert by_class["gray"].shape == (8, 8, 3) and (by_class["gray"] == 77).all()
    assert tuple(by_class["alpha"][0, 0]) == (255, 0, 0)
    assert tuple(by_class["alpha"][4, 4]) == (255, 255, 255)


def test_palette_and_16_bit_images_become_rgb(tmp_path):
    root = tmp_path / "odd"
    (root / "p").mkdir(parents=True)
    (root / "deep").mkdir()
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.putpixel((0, 0), 0)  # the transparent colour
    palette.save(root / "p" / "p.png", transparency=0)
    Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)).save(root / "deep" / "d.png")
    ds = load_dataset(f"folder:{root}", split="all")
    pixels = {ds.classes[label]: np.asarray(img) for img, label in (ds[i] for i in range(len(ds)))}
    assert tuple(pixels["p"][0, 0]) == (255, 255, 255) and tuple(pixels["p"][3, 3]) == (0, 128, 0)
    assert pixels["deep"].shape == (6, 6, 3) and (pixels["deep"] == 255).all()


def test_identity_of_a_folder_changes_when_an_image_is_replaced(folder_with_broken_files):
    dataset_id = f"folder:{folder_with_broken_files}"
    before = load_dataset(dataset_id, split="all").identity()
    Image.new("RGB", (30, 30), (1, 1, 1)).save(folder_with_broken_files / "cat" / "img_00.png")
    after = load_dataset(dataset_id, split="all").identity()
    assert before["n"] == after["n"] and before["sha256"] != after["sha256"]


def test_split_folders_are_official_and_flat_folders_are_one_class(tmp_path):
    root = tmp_path / "imagenette"
    for split, n in (("train", 10), ("val", 4)):
        write_class(root / split / "n01440764", n, (1, 2, 3))
        write_class(root / split / "n02102040", n, (3, 2, 1))
    test = load_dataset(f"folder:{root}", split="test")
    assert len(test) == 8 and all(k.startswith("val/") for k in test.keys)
    val = load_dataset(f"folder:{root}", split="val")
    assert len(val) == 4 and all(k.startswith("train/") for k in val.keys)
    flat = tmp_path / "flat"
    write_class(flat, 5, (9, 9, 9))
    ds = load_dataset(f"folder:{flat}", split="all")
    assert ds.classes == ["flat"] and len(ds) == 5


def test_folder_ids_take_corruptions_and_missing_folders_say_what_to_do(folder_with_broken_files, tmp_path):
    ds = load_dataset(f"folder:{folder_with_broken_files}+contrast@5", split="all")
    assert ds.id.endswith("+contrast@5") and ds.skipped == 3
    with pytest.raises(EmptyDatasetError, match="sub-folders"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyDatasetError, match="no image files"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_reference_set_offline_is_photo_crops_deterministic_in_the_seed():
    ref = reference_set(n=12, seed=0)
    assert ref.id == "photos" and ref.split == "all" and len(ref) == 12
    assert ref.identity() == reference_set(n=12, seed=0).identity()
    assert ref.identity()["sha256"] != reference_set(n=12, seed=1).identity()["sha256"]
    img, _ = ref[5]
    assert img.mode == "RGB" and img.size == (224, 224)
    assert np.asarray(img).std() > 5  # a real photo crop, not a flat patch


def test_reference_set_from_a_user_folder(folder_with_broken_files):
    ref = reference_set(n=4, seed=0, folder=folder_with_broken_files)
    assert ref.id == f"folder:{folder_with_broken_files.resolve()}" and len(ref) == 4
    assert np.bincount(ref.labels).tolist() == [2, 2]
