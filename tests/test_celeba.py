"""CelebA reader: both layouts on fake trees in the real formats, odd whitespace, clear errors."""
import shutil

import numpy as np
import pytest

from facelm.config import WorldParams, replace
from facelm.data.celeba import ATTR_NAMES, CelebA, check_tree, open_celeba
from facelm.data.fakeceleba import make_fake_celeba
from facelm.data.world import render_faces
from facelm.landmarks import to_5 as five_points


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    return make_fake_celeba(root, n=10, layout="aligned", seed=1, detect=None)


@pytest.fixture(scope="module")
def wild_nested(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild")
    return make_fake_celeba(root, n=8, layout="wild", seed=2, detect=None, nested=True)


def test_aligned_tree_reads_back_what_was_written(aligned):
    c = open_celeba(aligned.root, "aligned")
    assert len(c) == 10 and c.files == aligned.files
    assert c.landmarks5.dtype == np.float32 and c.landmarks5.shape == (10, 5, 2)
    # the files hold integer pixel indices: floor of the true continuous positions
    np.testing.assert_array_equal(c.landmarks5, np.floor(aligned.points5))
    np.testing.assert_array_equal(c.partition, aligned.partition)
    assert set(c.partition.tolist()) == {0, 1, 2}
    assert c.attrs.shape == (10, 40) and set(np.unique(c.attrs).tolist()) <= {-1, 1}
    assert c.attr_names == list(ATTR_NAMES)
    np.testing.assert_array_equal(c.bbox, aligned.face_boxes)
    assert c.image_dir.name == "img_align_celeba"
    img = c.read_image(0)
    assert img.shape == (218, 178, 3) and img.dtype == np.uint8
    # CelebA's "lefteye" is the eye on the image's left
    face = [i for i, f in enumerate(c.files) if f not in aligned.no_face_files][0]
    assert c.landmarks5[face, 0, 0] < c.landmarks5[face, 1, 0]
    assert c.landmarks5[face, 3, 0] < c.landmarks5[face, 4, 0]


def test_wild_layout_in_celeba_own_subfolders(wild_nested):
    root = wild_nested.root
    assert (root / "Img" / "img_celeba").is_dir() and (root / "Anno" / "list_landmarks_celeba.txt").is_file()
    c = CelebA(root, layout="wild")
    assert c.files == wild_nested.files
    np.testing.assert_array_equal(c.landmarks5, np.floor(wild_nested.points5))
    np.testing.assert_array_equal(c.bbox, wild_nested.face_boxes)
    shapes = {c.read_image(i).shape for i in range(len(c)) if c.files[i] not in wild_nested.corrupt_files}
    assert len(shapes) > 1  # in-the-wild images vary in size
    assert c.split_indices("train").tolist() == np.flatnonzero(wild_nested.partition == 0).tolist()


def test_five_points_follow_celeba_definitions():
    _, lm = render_faces(3, 64, 0, 0, world=replace(WorldParams(), yaw_max=0.0, pitch_max=0.0, roll_max=0.0))
    p5 = five_points(lm)
    np.testing.assert_allclose(p5[:, 0], lm[:, 19:25].mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(p5[:, 2], lm[:, 13])
    assert (p5[:, 0, 0] < p5[:, 1, 0]).all() and (p5[:, 3, 0] < p5[:, 4, 0]).all()


def _write(root, name, text):
    (root / name).write_bytes(text.encode())


def _handmade(root, landmarks_rows, count=None, partition="a.jpg 0\nb.jpg 2\n"):
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    count = len(landmarks_rows) if count is None else count
    _write(root, "list_landmarks_align_celeba.txt", f"{count}\r\n{header} \r\n" + "".join(landmarks_rows))
    _write(root, "list_eval_partition.txt", partition)


def test_header_and_whitespace_handling(tmp_path):
    rows = ["a.jpg\t 1 2  3   4 5 6 7 8 9 10\r\n", "\n", "b.jpg    11 12 13 14 15 16 17 18 19 20  \r\n"]
    _handmade(tmp_path, rows, count=2)
    c = open_celeba(tmp_path, "aligned")
    assert c.files == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(c.landmarks5[1].ravel(), np.arange(11, 21))
    assert c.partition.tolist() == [0, 2] and c.bbox is None and c.attrs is None


@pytest.mark.parametrize("rows, count, partition, match", [
    (["a.jpg 1 2 3 4 5 6 7 8 9 10\n"], 2, "a.jpg 0\n", "line 1 says 2 rows"),
    (["a.jpg 1 2 3 4 5 6 7 8 9\n"], None, "a.jpg 0\n", "line 3 must be"),
    (["\n", "a.jpg 1 2 3 4 5 6 7 8 9 x\n"], 1, "a.jpg 0\n", "line 4 must be"),
    (["a.jpg 1 2 3 4 5 6 7 8 9 10\n", "b.jpg 1 2 3 4 5 6 7 8 9 10\n"], None, "a.jpg 0\n", "no partition"),
    (["a.jpg 1 2 3 4 5 6 7 8 9 10\n"], None, "image_id partition\na.jpg 0\n", "no header"),
    (["a.jpg 1 2 3 4 5 6 7 8 9 10\n", "a.jpg 1 2 3 4 5 6 7 8 9 10\n"], None, "a.jpg 0\n", "more than once"),
])
def test_inconsistent_files_raise_naming_the_file(tmp_path, rows, count, partition, match):
    _handmade(tmp_path, rows, count=count, partition=partition)
    with pytest.raises(ValueError, match=match) as err:
        open_celeba(tmp_path, "aligned")
    assert "list_" in str(err.value)


def test_bbox_file_missing_an_image_raises(aligned, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(aligned.root, root)
    lines = (root / "list_bbox_celeba.txt").read_text().splitlines()
    (root / "list_bbox_celeba.txt").write_text("\n".join([str(len(lines) - 3)] + lines[1:-1]) + "\n")
    with pytest.raises(ValueError, match="list_bbox_celeba.txt.*not listed"):
        open_celeba(root, "aligned")


@pytest.mark.parametrize("missing", ["img_align_celeba", "list_landmarks_align_celeba.txt", "list_eval_partition.txt"])
def test_missing_file_or_folder_names_path_and_layout(aligned, tmp_path, missing):
    root = tmp_path / "t"
    shutil.copytree(aligned.root, root)
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError) as err:
        open_celeba(root, "aligned")
    msg = str(err.value)
    assert str(target) in msg
    for expected in ("'aligned'", "img_align_celeba/", "list_landmarks_align_celeba.txt", "list_eval_partition.txt"):
        assert expected in msg


def test_wrong_layout_and_root_errors(aligned, tmp_path):
    with pytest.raises(FileNotFoundError, match="img_celeba.*'wild'"):
        open_celeba(aligned.root, "wild")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_celeba(tmp_path / "nowhere", "aligned")
    with pytest.raises(ValueError, match="layout"):
        open_celeba(aligned.root, "cropped")


def test_optional_files_and_missing_images(aligned, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(aligned.root, root)
    (root / "list_attr_celeba.txt").unlink()
    (root / "list_bbox_celeba.txt").unlink()
    (root / "img_align_celeba" / aligned.files[4]).unlink()
    c = open_celeba(root, "aligned")
    assert c.attrs is None and c.bbox is None and len(c) == 10
    assert c.missing_files() == [aligned.files[4]]
    assert c.read_image(4) is None


def test_list_file_that_is_not_utf8_names_the_file(tmp_path):
    """Bytes that are not UTF-8 in a list file: ValueError naming the file and the line (a
    bare UnicodeDecodeError without the file's name before)."""
    _handmade(tmp_path, ["a.jpg 1 2 3 4 5 6 7 8 9 10\n"], partition="a.jpg 0\n")
    path = tmp_path / "list_eval_partition.txt"
    path.write_bytes(b"a.jpg 0\n\xff\xfeb.jpg 2\n")
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt: not UTF-8 text \(line 2") as err:
        open_celeba(tmp_path, "aligned")
    assert not isinstance(err.value, UnicodeDecodeError) and "\n" not in str(err.value)


def test_check_tree_reads_nothing_and_says_what_is_missing(aligned, tmp_path):
    found = check_tree(aligned.root, "aligned")
    assert found["partition"].name == "list_eval_partition.txt" and found["images"].is_dir()
    root = tmp_path / "t"
    shutil.copytree(aligned.root, root)
    (root / "list_eval_partition.txt").unlink()
    (root / "list_landmarks_align_celeba.txt").write_bytes(b"\xff not even text")  # not read
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt") as err:
        check_tree(root, "aligned")
    assert "\n" not in str(err.value)
