"""check_image_folder: an empty folder, and images at two depths (which make `datasets` drop every label)."""

import numpy as np
import pytest
from PIL import Image

from modeling_gpa.data.folder_checks import check_image_folder, image_files_by_depth


def image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)


def test_class_folders_pass_and_their_depths_are_counted(tmp_path):
    for label in ("cat", "dog"):
        for index in range(2):
            image(tmp_path / label / f"{index}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    assert {depth: len(paths) for depth, paths in image_files_by_depth(tmp_path).items()} == {2: 4}
    check_image_folder(tmp_path, "--train_dir", labels=True)


def test_an_empty_folder_and_a_nested_one_are_named(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"--train_dir .*empty holds no image files"):
        check_image_folder(tmp_path / "empty", "--train_dir")
    root = tmp_path / "classes"
    for label in ("cat", "dog"):
        image(root / label / "0.png")
        image(root / label / "1.png")
    image(root / "dog" / "puppies" / "2.png")
    check_image_folder(root, "--train_dir")  # without labels, depth does not matter
    with pytest.raises(ValueError) as error:
        check_image_folder(root, "--train_dir", labels=True)
    assert str(error.value).startswith(f"--train_dir {root}: {root / 'dog' / 'puppies'} holds images nested one folder")


def test_dangling_image_links_are_named_and_counted_once(tmp_path, caplog):
    for index in range(3):
        image(tmp_path / "cat" / f"{index}.png")
    (tmp_path / "cat" / "gone.jpg").symlink_to(tmp_path / "moved" / "gone.jpg")
    (tmp_path / "cat" / "lost.png").symlink_to(tmp_path / "lost.png")
    with caplog.at_level("WARNING"):
        check_image_folder(tmp_path, "--train_dir")
    assert caplog.text.count("symbolic links to nothing") == 1
    assert f"--train_dir {tmp_path}: 2 image files are symbolic links to nothing and are skipped: " in caplog.text
    assert "cat/gone.jpg, cat/lost.png" in caplog.text
    only_links = tmp_path / "links"
    only_links.mkdir()
    (only_links / "a.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ValueError, match="holds no image files"):
        check_image_folder(only_links, "--train_dir")
