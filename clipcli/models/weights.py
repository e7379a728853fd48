"""Where model weights live: known names, search folders, checksums, downloads, imports.

Resolution order (docs/architecture.md): an explicit file path, then `$CLIPCLI_MODELS`,
then the `clip` cache (`~/.cache/clip`), then a download. Without the file and
without network the caller gets a `WeightsUnavailableError` that says which
file to put where; never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from clip.clip import _MODELS as CLIP_URLS

from clipcli import ui
from clipcli.errors import BadInputError, WeightsUnavailableError
from clipcli.store.atomic import atomic_path, atomic_write
from clipcli.store.cache import cache_folder

_CHUNK = 1 << 20

# Approximate download sizes in MB as the release server reports them; the
# sha256 (part of each URL) is what verifies a file, the size only helps people.
_CLIP_APPROX_MB = {
    "RN50": 244,
    "RN101": 278,
    "RN50x4": 402,
    "RN50x16": 630,
    "RN50x64": 1260,
    "ViT-B/32": 338,
    "ViT-B/16": 335,
    "ViT-L/14": 890,
    "ViT-L/14@336px": 891,
}


@dataclass(frozen=True)
class KnownWeights:
    """A released checkpoint clipcli can fetch and verify."""

    name: str
    url: str
    sha256: str
    approx_bytes: int
    family: str = "clip"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


KNOWN: dict[str, KnownWeights] = {}


def register(weights: KnownWeights) -> None:
    """Make a checkpoint known to `models list`, `verify`, `import` and downloads."""
    KNOWN[weights.name] = weights


for _name, _url in CLIP_URLS.items():
    register(KnownWeights(_name, _url, _url.split("/")[-2], _CLIP_APPROX_MB.get(_name, 0) * 1_000_000))


def clip_cache_dir() -> Path:
    return Path("~/.cache/clip").expanduser()


def search_folders() -> list[Path]:
    """Folders searched for weights, in order: `$CLIPCLI_MODELS`, then the clip cache."""
    folders = []
    if os.environ.get("CLIPCLI_MODELS"):
        folders.append(Path(os.environ["CLIPCLI_MODELS"]).expanduser())
    folders.append(clip_cache_dir())
    return folders


def models_folder() -> Path:
    """Where downloads and imports are stored: the first search folder."""
    return search_folders()[0]


def file_name_for(name: str) -> str:
    """The on-disk name for a model name, as `clip` spells it (`ViT-B/32` -> `ViT-B-32.pt`)."""
    if name in KNOWN:
        return KNOWN[name].filename
    return name.replace("/", "-") + ".pt"


# ---------------------------------------------------------------- checksums


def _hash_cache_path() -> Path:
    return cache_folder() / "sha256.json"


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_of_stream(stream: BinaryIO) -> str:
    """sha256 of what is left to read in a binary stream."""
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def fresh_sha256(path: str | Path) -> str:
    """sha256 of a file as it is now: what `verify`, `import` and `list` report."""
    with open(path, "rb") as handle:
        return sha256_of_stream(handle)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so loading large files hashes them once.

    Whoever can write a file can also restore its size and mtime, so the cache only
    speeds up loading; verdicts about a file's identity use `fresh_sha256`.
    """
    path = Path(path).resolve()
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    cache = _read_hash_cache()
    entry = cache.get(str(path))
    if isinstance(entry, list) and entry[:2] == stamp and len(entry) == 3 and _is_sha256(entry[2]):
        return entry[2]
    digest = fresh_sha256(path)
    cache[str(path)] = [*stamp, digest]
    try:
        with atomic_write(_hash_cache_path(), "w") as out:
            json.dump(cache, out)
    except OSError:
        pass  # a read-only cache folder only costs re-hashing
    return digest


def _read_hash_cache() -> dict:
    """The hash cache, or an empty one when it is missing or not a JSON object (it is then rewritten)."""
    try:
        cache = json.loads(_hash_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _is_sha256(text: object) -> bool:
    return isinstance(text, str) and _SHA256_HEX.fullmatch(text) is not None


def expected_sha256(name: str, path: Path) -> str | None:
    """The checksum a named file should have: the release's, or the one recorded at import."""
    if name in KNOWN:
        return KNOWN[name].sha256
    sidecar = path.with_name(path.name + ".sha256")
    return recorded_sha256(sidecar) if sidecar.is_file() else None


def recorded_sha256(sidecar: Path) -> str | None:
    """The checksum in a `.sha256` record (`<hex>  <file name>`); None, with a notice, when unusable."""
    try:
        words = sidecar.read_bytes().decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        words = []
    if words and _is_sha256(words[0].lower()):
        return words[0].lower()
    ui.notice(f"{sidecar}: not a sha256 record; ignored")
    return None


# ---------------------------------------------------------------- resolution


def looks_like_path(name_or_path: str) -> bool:
    """Model names may contain '/' (`ViT-B/32`), so only these shapes count as paths."""
    return name_or_path.endswith((".pt", ".pth", ".bin", ".ckpt", ".tar")) or name_or_path.startswith(
        ("/", "./", "../", "~")
    )


def find_local(name: str) -> tuple[Path | None, list[str]]:
    """The first verified copy of `name` in the search folders, and what was wrong with others."""
    problems: list[str] = []
    for folder in search_folders():
        candidate = folder / file_name_for(name)
        if not candidate.is_file():
            continue
        expected = expected_sha256(name, candidate)
        if expected is None or file_sha256(candidate) == expected:
            return candidate, problems
        problems.append(f"{candidate} has the wrong sha256")
    return None, problems


def resolve_weights(name_or_path: str | Path, *, download: bool = True) -> Path:
    """The file to load for a model name or path, downloading known models if needed."""
    text = os.fspath(name_or_path)
    if Path(text).is_file():
        return Path(text)
    if isinstance(name_or_path, Path) or looks_like_path(text):
        raise BadInputError("no such checkpoint file", text)
    path, problems = find_local(text)
    if path is not None:
        return path
    known = KNOWN.get(text)
    if known is None:
        names = ", ".join(KNOWN)
        raise BadInputError(
            f"unknown model {text!r}: use one of {names}, a checkpoint path, "
            f"or `clipcli models import FILE --name {text}`"
        )
    if download:
        try:
            return download_weights(known)
        except WeightsUnavailableError as err:
            problems.append(str(err))
    raise WeightsUnavailableError(offline_message(known, problems))


def offline_message(known: KnownWeights, problems: list[str]) -> str:
    size = f"about {known.approx_bytes / 1e6:,.0f} MB, " if known.approx_bytes else ""
    why = f" ({'; '.join(problems)})" if problems else ""
    return (
        f"{known.name} weights unavailable{why}: put {known.filename} ({size}sha256 {known.sha256}) "
        f"in {models_folder()} (or any folder named by $CLIPCLI_MODELS), "
        f"or run `clipcli models import FILE`; it is published at {known.url}"
    )


def download_weights(known: KnownWeights, folder: Path | None = None) -> Path:
    """Download a release into the models folder, verifying its sha256 as it streams."""
    dest = (folder or models_folder()) / known.filename
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(known.url, timeout=30) as source, atomic_path(dest) as tmp:
            total = int(source.headers.get("Content-Length") or known.approx_bytes or 0)
            with open(tmp, "wb") as out, ui.progress(transfer=True) as bar:
                task = bar.add_task(f"downloading {known.filename}", total=total or None)
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.advance(task, len(chunk))
            if digest.hexdigest() != known.sha256:
                raise WeightsUnavailableError(f"download of {known.filename} has the wrong sha256")
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise WeightsUnavailableError(f"download failed: {reason}") from err
    return dest


# ---------------------------------------------------------------- listing, verifying, importing


@dataclass(frozen=True)
class WeightsStatus:
    """What `models list` and `models verify` report for one model."""

    name: str
    path: Path | None
    size: int | None
    sha256: str | None
    verified: bool | None  # None: nothing to verify against (custom file without a record)
    known: bool

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "path": None if self.path is None else str(self.path),
            "present": self.path is not None,
            "size": self.size,
            "sha256": self.sha256,
            "verified": self.verified,
            "known": self.known,
        }


def status_of(name: str, path: Path | None) -> WeightsStatus:
    """What `name`'s file holds now: hashed afresh, never taken from the hash cache."""
    if path is None:
        return WeightsStatus(name, None, None, None, None, name in KNOWN)
    digest = fresh_sha256(path)
    expected = expected_sha256(name, path)
    verified = None if expected is None else digest == expected
    return WeightsStatus(name, path, path.stat().st_size, digest, verified, name in KNOWN)


def _present(name: str) -> Path | None:
    """The first copy of `name` in the search folders, verified or not."""
    for folder in search_folders():
        candidate = folder / file_name_for(name)
        if candidate.is_file():
            return candidate
    return None


def custom_names() -> list[str]:
    """Names of imported (non-release) checkpoints found in the search folders."""
    release_files = {known.filename for known in KNOWN.values()}
    names = []
    for folder in search_folders():
        if folder.is_dir():
            for path in sorted(folder.glob("*.pt")):
                if path.name not in release_files and path.stem not in names:
                    names.append(path.stem)
    return names


def list_weights() -> list[WeightsStatus]:
    return [status_of(name, _present(name)) for name in [*KNOWN, *custom_names()]]


def verify(name_or_path: str) -> WeightsStatus:
    """Checksum one model by name, or a file against every known release, re-reading the file."""
    if Path(name_or_path).is_file():
        path = Path(name_or_path)
        digest = fresh_sha256(path)
        match = next((k.name for k in KNOWN.values() if k.sha256 == digest), None)
        return WeightsStatus(match or path.name, path, path.stat().st_size, digest, match is not None, bool(match))
    if looks_like_path(name_or_path):
        raise BadInputError("no such checkpoint file", name_or_path)
    if name_or_path not in KNOWN and name_or_path not in custom_names():
        raise BadInputError(f"unknown model {name_or_path!r}: see `clipcli models list`")
    return status_of(name_or_path, _present(name_or_path))


_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/+-]*$")


def _holds_tensors(path: Path, tensors: dict) -> bool:
    """Whether `path` is a plain state dict equal to `tensors` (what a trusted import stores)."""
    import torch

    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain state dict: it holds something else
        return False
    return (
        isinstance(stored, dict)
        and stored.keys() == tensors.keys()
        and all(
            isinstance(stored[key], torch.Tensor) and torch.equal(stored[key], value) for key, value in tensors.items()
        )
    )


def import_weights(file: str | Path, name: str | None = None, check=None, overwrite: bool = False) -> WeightsStatus:
    """Copy a checkpoint into the models folder under its release name or `name`.

    A file whose sha256 matches a release is stored under that release's name;
    any other file needs `name`, is checked by `check(path)` (which raises on a
    file that is not a usable checkpoint) and gets a `.sha256` record so
    `verify` can later tell whether it changed. Where `check` returns a state
    dict, those tensors are stored instead of the file's bytes: a checkpoint
    trusted once at import then loads by name as plain tensors, running nothing.
    A name that already holds another file is refused unless `overwrite`.
    """
    source = Path(file)
    if not source.is_file():
        raise BadInputError("no such file", source)
    digest = fresh_sha256(source)
    known = next((k for k in KNOWN.values() if k.sha256 == digest), None)
    if known is None:
        if not name:
            raise BadInputError("sha256 matches no known model; pass --name NAME to import it as your own", source)
        if name in KNOWN:
            raise BadInputError(f"sha256 does not match the release {name}; choose another --name", source)
        if not _NAME_PATTERN.match(name):
            raise BadInputError(f"--name {name!r}: use letters, digits and . _ - @ / + only")
        target_name = name
    else:
        target_name = known.name
    dest = models_folder() / file_name_for(target_name)
    if dest.exists() and not overwrite and fresh_sha256(dest) == digest:
        return status_of(target_name, dest)  # already imported
    tensors = check(source) if known is None and check is not None else None
    if dest.exists() and not overwrite:
        if tensors is not None and _holds_tensors(dest, tensors):
            return status_of(target_name, dest)  # already imported, re-saved as plain tensors
        raise BadInputError(f"{dest} already holds another model; pass --overwrite to replace it", source)
    with atomic_path(dest) as tmp:
        if tensors is None:
            shutil.copyfile(source, tmp)
        else:
            import torch  # only a trusted import re-saves; listing and verifying stay torch-free

            torch.save(tensors, tmp)
    if known is None:
        digest = digest if tensors is None else fresh_sha256(dest)
        with atomic_write(dest.with_name(dest.name + ".sha256"), "w") as record:
            record.write(f"{digest}  {dest.name}\n")
    return status_of(target_name, dest)
