"""Read the HDF5 point-cloud sets the PointCLIP papers evaluate on.

ModelNet40 (`modelnet40_ply_hdf5_2048/ply_data_test*.h5`) and ScanObjectNN
(`main_split/*.h5`) store a `data` array of shapes, `[S, N, 3]` float32, and a
`label` array of class indices `[S]` or `[S, 1]`; other keys (normals,
masks) are ignored, as the official loaders ignore them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipcli.errors import BadInputError, first_line

H5_EXTENSIONS = (".h5", ".hdf5")


def is_h5(path: str | Path) -> bool:
    return Path(path).suffix.lower() in H5_EXTENSIONS


def read_h5_clouds(path: str | Path, index: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """`data` as `[S, N, 3]` float32 (only shape `index` when given, as `[1, N, 3]`) and `label` `[S]` or None.

    Raises BadInputError for files that are not HDF5, lack a `data` array of
    3-D points, hold non-finite coordinates, or whose labels do not match.
    """
    import h5py  # imported here: only HDF5 inputs need it

    path = Path(path)
    if not path.is_file():
        raise BadInputError("no such file", path)
    try:
        with h5py.File(path, "r") as handle:
            data, labels = _read_arrays(handle, index, path)
    except OSError as error:
        raise BadInputError(f"not a readable HDF5 file ({first_line(error)})", path) from None
    if not np.isfinite(data).all():
        shape = int(np.nonzero(~np.isfinite(data).all(axis=(1, 2)))[0][0]) if index is None else index
        raise BadInputError(f"shape {shape} has NaN or infinite coordinates", path)
    return data, labels


def _read_arrays(handle, index: int | None, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    dataset = handle.get("data")
    if dataset is None or not hasattr(dataset, "shape"):
        raise BadInputError(f"no 'data' array (keys: {', '.join(sorted(handle.keys())) or 'none'})", path)
    if len(dataset.shape) != 3 or dataset.shape[2] < 3 or dataset.shape[1] == 0:
        raise BadInputError(f"'data' must be [shapes, points, 3], got {list(dataset.shape)}", path)
    count = dataset.shape[0]
    if count == 0:
        raise BadInputError("'data' holds no shapes", path)
    if index is not None and not 0 <= index < count:
        raise BadInputError(f"--h5-index {index} is out of range: the file holds {count} shapes (0-{count - 1})", path)
    rows = slice(None) if index is None else slice(index, index + 1)
    data = np.asarray(dataset[rows][..., :3], dtype=np.float32)
    labels = handle.get("label")
    if labels is None:
        return data, None
    labels = np.asarray(labels[()]).reshape(-1)
    integral = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and bool(np.all(labels == np.round(labels))))
    if len(labels) != count or not integral:
        found = f"{labels.dtype} of length {len(labels)}"
        raise BadInputError(f"'label' must hold one integer per shape ({count}), got {found}", path)
    return data, labels[rows].astype(np.int64)
