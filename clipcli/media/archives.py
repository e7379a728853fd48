"""Zip archives checked before a library unpacks them: a small file must not inflate to gigabytes.

Checkpoints (torch's zip format) and 3MF meshes are zip archives, and their
readers allocate by the sizes the central directory declares. Those sizes are
summed and compared with the file's own size before any entry is read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

INFLATION_ALLOWANCE = 1 << 20  # bytes; tiny archives of well-compressed metadata stay readable


class ArchiveTooLarge(ValueError):
    """The archive's entries unpack to more than its format allows for a file of its size."""


def checked_entries(file: str | Path | IO[bytes], size: int, max_inflation: int) -> list[zipfile.ZipInfo]:
    """The entries of the zip archive `file` (`size` bytes on disk).

    Raises ArchiveTooLarge where they would unpack to more than `max_inflation`
    times `size` plus INFLATION_ALLOWANCE, and zipfile.BadZipFile (or OSError,
    ValueError) where the archive is damaged.
    """
    with zipfile.ZipFile(file) as archive:
        entries = archive.infolist()
    inflated = sum(entry.file_size for entry in entries)
    if inflated > max_inflation * size + INFLATION_ALLOWANCE:
        raise ArchiveTooLarge(
            f"zip archive unpacks to {inflated:,} bytes from {size:,}; at most {max_inflation} times its size is read"
        )
    return entries
