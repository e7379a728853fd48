"""Models: loading CLIP (names, paths, cache, checksums, device) and the heads papers add."""

from clipcli.models.clip_loader import load_clip
from clipcli.models.device import resolve_device

__all__ = ["load_clip", "resolve_device"]
