"""Read the HDF5 point-cloud sets the PointCLIP papers evaluate on.

ModelNet40 (`modelnet40_ply_hdf5_2048/ply_data_test*.h5`) and ScanObjectNN
(`main_split/*.h5`) store a `data` array of shapes, `[S, N, 3]` float32, and a
`label` array of class indices `[S]` or `[S, 1]`; other keys (normals,
masks) are ignored, as the official loaders ignore them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.errors import BadInputError, first_line

H5_EXTENSIONS = (".h5", ".hdf5")


def is_h5(path: str | Path) -> bool:
    return Path(path).suffix.lower() in H5_EXTENSIONS


def h5_labels(path: str | Path) -> tuple[int, np.ndarray | None]:
    """How many shapes a set holds and their labels `[S]` (None without a `label` array); no points are read.

    Raises BadInputError for files that are not HDF5, lack a `data` array of
    3-D points, or whose labels do not match the shapes.
    """
    return _with_set(path, lambda dataset, labels: (dataset.shape[0], labels))


def read_h5_clouds(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Every shape's points `[S, N, 3]` float32 and the labels `[S]` (or None), checked as `h5_labels` checks them."""
    return _with_set(path, lambda dataset, labels: (np.asarray(dataset[()][..., :3], dtype=np.float32), labels))


class H5Shapes:
    """Shapes of HDF5 sets one at a time, for readers on several threads.

    Sets are often gzip-compressed in large chunks, so a shape read alone
    costs a whole chunk; each set's points are read whole once instead, and
    the last set read is kept while its shapes are asked for. Pickles empty.
    """

    def __init__(self) -> None:
        self._forget()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._forget()

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._points = np.zeros((0, 0, 3), dtype=np.float32)

    def shape(self, path: Path, index: int) -> np.ndarray:
        """Shape `index` of the set at `path`, `[N, 3]` float32."""
        with self._lock:
            if self._path != path:
                self._points, _ = read_h5_clouds(path)
                self._path = path
            check_shape_index(index, len(self._points), path)
            return self._points[index]


def check_shape_index(index: int, count: int, path: Path) -> None:
    """BadInputError unless a set of `count` shapes has a shape `index`."""
    if not 0 <= index < count:
        raise BadInputError(f"has no shape {index}: the file holds {count} shapes (0-{count - 1})", path)


def _with_set(path: str | Path, take):
    """`take(data dataset, labels or None)` on the open, checked set at `path`."""
    import h5py  # imported here: only HDF5 inputs need it

    path = Path(path)
    if not path.is_file():
        raise BadInputError("no such file", path)
    try:
        with h5py.File(path, "r") as handle:
            dataset = _checked_data(handle, path)
            return take(dataset, _checked_labels(handle, dataset.shape[0], path))
    except OSError as error:
        raise BadInputError(f"not a readable HDF5 file ({first_line(error)})", path) from None


def _checked_data(handle, path: Path):
    dataset = handle.get("data")
    if dataset is None or not hasattr(dataset, "shape"):
        raise BadInputError(f"no 'data' array (keys: {', '.join(sorted(handle.keys())) or 'none'})", path)
    if len(dataset.shape) != 3 or dataset.shape[2] < 3 or dataset.shape[1] == 0:
        raise BadInputError(f"'data' must be [shapes, points, 3], got {list(dataset.shape)}", path)
    if dataset.shape[0] == 0:
        raise BadInputError("'data' holds no shapes", path)
    return dataset


def _checked_labels(handle, count: int, path: Path) -> np.ndarray | None:
    labels = handle.get("label")
    if labels is None:
        return None
    labels = np.asarray(labels[()]).reshape(-1)
    integral = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and bool(np.all(labels == np.round(labels))))
    if len(labels) != count or not integral:
        found = f"{labels.dtype} of length {len(labels)}"
        raise BadInputError(f"'label' must hold one integer per shape ({count}), got {found}", path)
    return labels.astype(np.int64)
