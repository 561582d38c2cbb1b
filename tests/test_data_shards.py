"""prepare_shards: an image folder written once as parquet (the Hub's layout) or webdataset shards."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from test_data_streaming import solid_image_folder

from modeling_gpa.data.shards import list_image_files, prepare_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "run_scripts"))
import prepare_shards as prepare_shards_script  # noqa: E402


def test_parquet_shards_hold_the_files_bytes_and_labels_in_a_shuffled_order(tmp_path):
    folder = solid_image_folder(tmp_path / "images", 30, classes=3)
    paths = prepare_shards(str(folder), str(tmp_path / "out"), num_shards=4, seed=1)
    assert [Path(p).name for p in paths] == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert loaded.features["label"].names == ["class_0", "class_1", "class_2"]
    rows = loaded.cast_column("image", datasets.Image(decode=False))
    names = [row["path"] for row in rows["image"]]
    assert sorted(names) == sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png")) and names != sorted(names)
    first = rows[0]
    assert first["image"]["bytes"] == (folder / first["image"]["path"]).read_bytes()
    assert loaded.features["label"].names[first["label"]] == first["image"]["path"].split("/")[0]
    assert sum(pq.read_metadata(p).num_rows for p in paths) == 30


def test_webdataset_shards_have_image_and_class_members(tmp_path):
    folder = solid_image_folder(tmp_path / "images", 6)
    paths = prepare_shards(str(folder), str(tmp_path / "out"), shard_format="webdataset", num_shards=2)
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
    assert len(names) == 6 and {Path(n).suffix for n in names} == {".png", ".cls"}
    loaded = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert sorted(loaded["cls"]) == [0, 0, 0, 1, 1, 1]


def test_images_without_class_folders_get_no_label_and_mixed_formats_refuse_webdataset(tmp_path):
    folder = tmp_path / "flat"
    solid_image_folder(tmp_path / "images", 2)
    folder.mkdir()
    for path in (tmp_path / "images").rglob("*.png"):
        path.rename(folder / path.name)
    assert list_image_files(str(folder)).labels is None
    (folder / "photo.jpg").write_bytes((folder / "000.png").read_bytes())
    with pytest.raises(ValueError, match="mixes image formats"):
        prepare_shards(str(folder), str(tmp_path / "out"), shard_format="webdataset")


def test_the_script_writes_both_splits_and_errors_in_one_line(tmp_path, capsys):
    folder = solid_image_folder(tmp_path / "images", 8)
    paths = prepare_shards_script.main(
        ["--train_dir", str(folder), "--validation_dir", str(folder), "--output_dir", str(tmp_path / "out")]
    )
    assert [Path(p).name for p in paths] == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    assert "--dataset_name" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="prepare_shards.py: error: image folder .* does not exist"):
        prepare_shards_script.main(["--train_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="num_shards=9 must be between 1 and the 8 images"):
        prepare_shards_script.main(
            ["--train_dir", str(folder), "--output_dir", str(tmp_path / "y"), "--num_shards", "9"]
        )
