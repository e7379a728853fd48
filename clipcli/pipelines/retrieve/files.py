"""Finding the videos to search and the folders their indexes live in."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from clipcli.errors import BadInputError
from clipcli.media.video import VIDEO_EXTENSIONS


def index_home() -> Path:
    """Where per-folder indexes live: `$CLIPCLI_INDEX_HOME`, else `$XDG_DATA_HOME/clipcli/indexes`."""
    if os.environ.get("CLIPCLI_INDEX_HOME"):
        return Path(os.environ["CLIPCLI_INDEX_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data).expanduser() / "clipcli" / "indexes"


def default_index_dir(root: Path) -> Path:
    """The index folder for a folder (or file) searched without --index: its name plus a hash of its path."""
    absolute = os.path.abspath(root)
    digest = hashlib.sha1(os.fsencode(absolute)).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(absolute) or "root")[:40]
    return index_home() / f"{name}-{digest}"


def walk_videos(root: Path) -> list[Path]:
    """Video files under `root` (by extension, case-insensitive), sorted, absolute.

    Follows symlinks but never enters a directory twice, so symlink loops end;
    skips hidden directories (names starting with "."). A file root is itself.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        return [root]
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            stat = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        found += [Path(folder) / name for name in files if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS]
    return sorted(found)


def check_roots(items: Sequence[str | Path]) -> list[Path]:
    """Absolute folders/files, each of which must exist."""
    if not items:
        raise BadInputError("give at least one folder (or video file) to search")
    roots = []
    for item in items:
        path = Path(item).expanduser()
        if not path.exists():
            raise BadInputError("no such file or folder", path)
        roots.append(Path(os.path.abspath(path)))
    return list(dict.fromkeys(roots))


def find_videos(videos_dir: Path, ids: Sequence[str]) -> dict[str, Path]:
    """Each id's file, `VIDEOS_DIR/**/ID.<video extension>`; an id two files share is refused."""
    if not videos_dir.is_dir():
        raise BadInputError("not a folder", videos_dir)
    by_stem: dict[str, list[Path]] = {}
    for path in walk_videos(videos_dir):
        by_stem.setdefault(path.stem, []).append(path)
    missing = [video_id for video_id in dict.fromkeys(ids) if video_id not in by_stem]
    if missing:
        raise BadInputError(f"{len(missing)} video(s) of the CSV are not in the folder (e.g. {missing[0]})", videos_dir)
    for video_id in dict.fromkeys(ids):
        if len(by_stem[video_id]) > 1:
            first, second = by_stem[video_id][:2]
            raise BadInputError(f"{first} and {second} both have the id {video_id}; keep one")
    return {video_id: by_stem[video_id][0] for video_id in ids}
