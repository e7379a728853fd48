"""On-disk state: atomic writes (used by every writer) and, later, indexes."""

from clipcli.store.atomic import atomic_path, atomic_write

__all__ = ["atomic_path", "atomic_write"]
