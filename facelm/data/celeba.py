"""Reading CelebA from disk: image lists, 5-point landmarks, partition, boxes and attributes.

Two layouts, each as CelebA ships it (files flat in ``root``, or in the official
``Img/``, ``Anno/`` and ``Eval/`` sub-folders; both are accepted):

- ``aligned``: ``img_align_celeba/`` + ``list_landmarks_align_celeba.txt``
- ``wild``:    ``img_celeba/``       + ``list_landmarks_celeba.txt``

and, for both, ``list_eval_partition.txt`` (required) and ``list_bbox_celeba.txt`` and
``list_attr_celeba.txt`` (optional: read when present, else ``None``; nothing in
preprocessing needs them). Annotation files are: line 1 the row count, line 2 the header
(column names), then one row per image; ``list_eval_partition.txt`` has no header. Fields
are split on runs of whitespace (CelebA pads with several spaces; CRLF is fine).

Consistency policy: the landmarks file defines the image list (in its order). A header
count that disagrees with the rows, a malformed row, a duplicated image, or an image of
the landmarks file missing from the partition/bbox/attr file raises ``ValueError`` naming
the file. Image files are *not* checked here (202,599 stat calls): an image listed but
absent on disk is skipped and counted as ``missing`` by preprocessing
(:meth:`CelebA.missing_files` lists them on demand).

Landmarks are kept exactly as in the file: integer pixel positions of the image's own
pixel grid (``lefteye`` is the eye on the image's *left*, i.e. the subject's right eye).
"""
from __future__ import annotations

import gc
import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np

LAYOUTS = ("aligned", "wild")
IMAGE_DIRS = {"aligned": "img_align_celeba", "wild": "img_celeba"}
LANDMARK_FILES = {"aligned": "list_landmarks_align_celeba.txt", "wild": "list_landmarks_celeba.txt"}
PARTITION_FILE = "list_eval_partition.txt"
BBOX_FILE = "list_bbox_celeba.txt"
ATTR_FILE = "list_attr_celeba.txt"
# The official archive keeps images under Img/, annotations under Anno/, the split under Eval/.
SUBDIRS = {"image": "Img", "anno": "Anno", "eval": "Eval"}

LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
BBOX_COLUMNS = ("image_id", "x_1", "y_1", "width", "height")
ATTR_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
PARTITIONS = {0: "train", 1: "valid", 2: "test"}


def expected_layout(layout: str) -> str:
    """A human-readable description of the files a CelebA ``layout`` needs (for error messages)."""
    return (
        f"CelebA layout {layout!r} expects, in the root folder (or in CelebA's own Img/, Anno/, "
        f"Eval/ sub-folders): {IMAGE_DIRS[layout]}/ (the .jpg images), {LANDMARK_FILES[layout]}, "
        f"{PARTITION_FILE}; optionally {BBOX_FILE} and {ATTR_FILE}"
    )


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} (got {layout!r})")


def _find(root: Path, name: str, sub: str, is_dir: bool) -> Path | None:
    for folder in (root, root / sub):
        path = folder / name
        if path.is_dir() if is_dir else path.is_file():
            return path
    return None


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: parsing makes ~10M short-lived strings and lists
    (the attribute file alone has 8M fields) and would trigger full collections over and
    over for nothing; with it paused, reading CelebA's files is ~4x faster."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty lines of ``path`` as (1-based line number, fields split on runs of whitespace).

    Bytes that are not UTF-8 (a damaged copy, another encoding) raise ValueError naming the
    file and the line, not a bare UnicodeDecodeError.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}: not UTF-8 text (line {line}, byte {err.start}: "
                         f"{data[err.start:err.start + 1]!r}); CelebA's list files are plain ASCII") from None
    lines = io.StringIO(text, newline=None)  # universal newlines, as a text-mode file reads them
    return [(i + 1, parts) for i, parts in enumerate(line.split() for line in lines) if parts]


def _read_table(path: Path, header: tuple[str, ...] | None,
                dtype) -> tuple[list[str], np.ndarray, list[str]]:
    """Read a CelebA annotation file: count line, header line, then ``id v1 .. vn`` rows.

    Returns (image ids, values [N, n], header names). ``header`` (when given) is the
    expected column list, else any header of n names (attribute file); ``image_id`` as a
    first header column is tolerated (bbox file).
    """
    numbered = _lines(path)
    rows = [r for _, r in numbered]
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a count line and a header line, found {len(rows)} lines")
    if len(rows[0]) != 1 or not rows[0][0].isdigit():
        raise ValueError(f"{path}: line 1 must be the number of rows, got {' '.join(rows[0])!r}")
    count = int(rows[0][0])
    names = rows[1][1:] if rows[1][0] == "image_id" else rows[1]
    n_values = len(header) if header is not None else len(names)
    if len(names) != n_values or (header is not None and tuple(names) != header):
        want = " ".join(header) if header is not None else f"{n_values} column names"
        raise ValueError(f"{path}: line 2 must be the header ({want}), got {' '.join(rows[1])!r}")
    body = rows[2:]
    if len(body) != count:
        raise ValueError(f"{path}: line 1 says {count} rows but the file holds {len(body)}")
    ids = [r[0] for r in body]
    try:
        values = np.array([r[1:] for r in body], dtype=np.float64)
    except ValueError:
        bad = next(i for i, r in enumerate(body) if len(r) != n_values + 1 or not _numeric(r[1:]))
        raise ValueError(f"{path}: line {numbered[bad + 2][0]} must be an image name and {n_values} "
                         f"numbers, got {' '.join(body[bad])!r}") from None
    if values.shape != (len(body), n_values):
        bad = next(i for i, r in enumerate(body) if len(r) != n_values + 1)
        raise ValueError(f"{path}: line {numbered[bad + 2][0]} must be an image name and {n_values} "
                         f"numbers, got {' '.join(body[bad])!r}")
    return ids, values.astype(dtype), list(names)


def _numeric(fields: list[str]) -> bool:
    try:
        [float(v) for v in fields]
        return True
    except ValueError:
        return False


def _read_partition(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, r in _lines(path):
        if len(r) != 2 or r[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}: line {i} must be '<image> <0|1|2>' (no header), got {' '.join(r)!r}")
        out[r[0]] = int(r[1])
    return out


def _align(path: Path, files: list[str], ids: list[str], values: np.ndarray) -> np.ndarray:
    """Rows of ``values`` (keyed by ``ids``) in the order of ``files``; every file must be there."""
    index = {name: i for i, name in enumerate(ids)}
    missing = [f for f in files if f not in index]
    if missing:
        raise ValueError(f"{path}: {len(missing)} images of the landmarks file are not listed "
                         f"(first: {missing[:3]})")
    return values[[index[f] for f in files]]


class CelebA:
    """CelebA annotations in one layout. Arrays are aligned with :attr:`files`.

    - ``files``: image names (``000001.jpg``, ...) in the landmarks file's order;
    - ``landmarks5``: float32 ``[N, 5, 2]`` pixel positions as written in the file (order
      lefteye, righteye, nose, leftmouth, rightmouth; "left" = the image's left);
    - ``partition``: int8 ``[N]``, 0 train, 1 valid, 2 test;
    - ``bbox``: int32 ``[N, 4]`` ``x_1, y_1, width, height`` (in-the-wild image pixels), or None;
    - ``attrs``: int8 ``[N, 40]`` of +-1, or None; names in ``attr_names``.
    """

    root: Path
    layout: str
    image_dir: Path
    files: list[str]
    landmarks5: np.ndarray
    partition: np.ndarray
    bbox: np.ndarray | None
    attrs: np.ndarray | None
    attr_names: list[str]

    def __init__(self, root: str | Path, layout: str) -> None:
        found = check_tree(root, layout)
        self.root, self.layout, self.image_dir = Path(root), layout, found["images"]
        with _gc_paused():
            self._read(found)

    def _read(self, found: dict[str, Path]) -> None:
        root = self.root
        lm_path = found["landmarks"]
        self.files, values, _ = _read_table(lm_path, LANDMARK_COLUMNS, np.float32)
        if len(set(self.files)) != len(self.files):
            raise ValueError(f"{lm_path}: an image is listed more than once")
        self.landmarks5 = values.reshape(-1, 5, 2)

        part = _read_partition(found["partition"])
        missing = [f for f in self.files if f not in part]
        if missing:
            raise ValueError(f"{found['partition']}: {len(missing)} images of {lm_path.name} have no "
                             f"partition (first: {missing[:3]})")
        self.partition = np.array([part[f] for f in self.files], dtype=np.int8)

        self.bbox, self.attrs, self.attr_names = None, None, []
        bbox_path = _find(root, BBOX_FILE, SUBDIRS["anno"], False)
        if bbox_path is not None:
            ids, values, _ = _read_table(bbox_path, BBOX_COLUMNS[1:], np.int32)
            self.bbox = _align(bbox_path, self.files, ids, values)
        attr_path = _find(root, ATTR_FILE, SUBDIRS["anno"], False)
        if attr_path is not None:
            ids, values, self.attr_names = _read_table(attr_path, None, np.int8)
            self.attrs = _align(attr_path, self.files, ids, values)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        counts = {PARTITIONS[k]: int((self.partition == k).sum()) for k in PARTITIONS}
        return f"CelebA(root={str(self.root)!r}, layout={self.layout!r}, n={len(self)}, {counts})"

    def image_path(self, i: int) -> Path:
        """Path of image ``i``."""
        return self.image_dir / self.files[i]

    def read_image(self, i: int) -> np.ndarray | None:
        """Image ``i`` as uint8 RGB ``[H, W, 3]``, or None when missing or unreadable."""
        import cv2

        bgr = cv2.imread(str(self.image_path(i)), cv2.IMREAD_COLOR)
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def missing_files(self) -> list[str]:
        """Images listed in the annotations but absent from the image folder."""
        present = {p.name for p in self.image_dir.iterdir()}
        return [f for f in self.files if f not in present]

    def split_indices(self, name: str) -> np.ndarray:
        """Indices of the ``train``, ``valid`` or ``test`` partition."""
        codes = {v: k for k, v in PARTITIONS.items()}
        if name not in codes:
            raise ValueError(f"partition must be one of {tuple(codes)} (got {name!r})")
        return np.flatnonzero(self.partition == codes[name])


def check_tree(root: str | Path, layout: str) -> dict[str, Path]:
    """The image folder, landmarks file and partition file of a CelebA tree, found without
    reading them (cheap: a stage checks this before any work).

    Raises ValueError for an unknown layout and FileNotFoundError, in one line naming the
    missing path and the expected layout, for a missing root, folder or file.
    """
    _check_layout(layout)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CelebA root folder {root} does not exist. {expected_layout(layout)}")
    wanted = {
        "images": (IMAGE_DIRS[layout], SUBDIRS["image"], True),
        "landmarks": (LANDMARK_FILES[layout], SUBDIRS["anno"], False),
        "partition": (PARTITION_FILE, SUBDIRS["eval"], False),
    }
    found: dict[str, Path] = {}
    for key, (name, sub, is_dir) in wanted.items():
        path = _find(root, name, sub, is_dir)
        if path is None:
            kind = "folder" if is_dir else "file"
            raise FileNotFoundError(f"missing CelebA {kind} {root / name} (also looked in {root / sub / name}). "
                                    f"{expected_layout(layout)}")
        found[key] = path
    return found


def open_celeba(root: str | Path, layout: str) -> CelebA:
    """Open CelebA at ``root`` in ``layout`` (``aligned`` or ``wild``), checking files first.

    Raises FileNotFoundError naming the missing path and the expected layout, ValueError for
    an unknown layout or an inconsistent or undecodable annotation file (naming the file).
    """
    return CelebA(root, layout)
