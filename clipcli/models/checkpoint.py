"""Reading checkpoint files without running code from them.

Pickles are read with `torch.load(weights_only=True)`. Loading a TorchScript
archive runs code the archive holds, and PyTorch has no safe mode for it, so
only the known releases (OpenAI's `.pt` files, recognised by sha256) load as
TorchScript. Any other file that needs code to load is refused unless the user
says they trust it. Zip archives are sized up from their central directory
before torch reads them, so a small file cannot inflate to gigabytes.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch

from clipcli.errors import BadInputError, first_line
from clipcli.media.archives import ArchiveTooLarge, checked_entries
from clipcli.models.weights import KNOWN, sha256_of_stream

TRUST_HINT = "pass --trust-checkpoint if you trust its source"

# torch.save and torch.jit.save store zip entries uncompressed, so a checkpoint
# unpacks to about its own size; only a crafted archive inflates further.
MAX_INFLATION = 16
_ZIP_MAGIC = b"PK\x03\x04"  # what torch.load looks for to read a file as a zip archive


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict:
    """The tensors of a checkpoint as a dict, on the CPU.

    A TorchScript archive gives its module's `state_dict()` when it is a known
    release or `trust` is set; pickles are read with `weights_only=True` unless `trust`.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError("no such checkpoint file", path)
    if path.stat().st_size == 0:
        raise BadInputError("checkpoint file is empty", path)
    names = _zip_entry_names(path)
    if names is not None and _is_torchscript(names):
        return _torchscript_state_dict(path, trust)
    return _pickled_state_dict(path, trust)


def _zip_entry_names(path: Path) -> list[str] | None:
    """The entry names of a zip checkpoint (None for other files), refusing archives that inflate too far.

    The limit is MAX_INFLATION times the file size (`clipcli.media.archives`).
    """
    with open(path, "rb") as handle:
        if handle.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return None
    try:
        entries = checked_entries(path, path.stat().st_size, MAX_INFLATION)
    except ArchiveTooLarge as err:
        raise BadInputError(str(err), path) from None
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise BadInputError(f"damaged zip archive ({first_line(err)})", path) from err
    return [entry.filename for entry in entries]


def _is_torchscript(names: list[str]) -> bool:
    """TorchScript archives hold a `constants.pkl` or `code/` entry."""
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def _torchscript_state_dict(path: Path, trust: bool) -> dict:
    """A TorchScript module's tensors, if the file is a known release or trusted.

    The file is hashed on every load, not looked up in the hash cache (whoever can
    write a file can restore its size and mtime), and torch then reads that same
    open file, so a file swapped in after hashing is not the one loaded.
    """
    with open(path, "rb") as handle:
        if not trust and sha256_of_stream(handle) not in {known.sha256 for known in KNOWN.values()}:
            raise BadInputError(
                f"TorchScript archive that is no known release; loading it runs code it holds; {TRUST_HINT}", path
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.load is deprecated, the files are not
                module = torch.jit.load(_name_of_open_file(handle, path), map_location="cpu")
        except RuntimeError as err:
            raise BadInputError(f"unreadable TorchScript checkpoint ({first_line(err)})", path) from err
    return module.state_dict()


def _name_of_open_file(handle: BinaryIO, path: Path) -> str:
    """A name that opens the very file `handle` has open (Linux), even if `path` now names another."""
    link = Path(f"/proc/self/fd/{handle.fileno()}")
    return str(link) if link.exists() else str(path)


def _pickled_state_dict(path: Path, trust: bool) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)  # torch's, not the user's
            loaded = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if not trust and "weights_only" in str(err).lower().replace(" ", "_"):
            raise BadInputError(f"checkpoint needs code execution to load; {TRUST_HINT}", path) from err
        raise BadInputError(f"not a PyTorch checkpoint ({first_line(err)})", path) from err
    except RuntimeError as err:
        if "storage has wrong byte size" in str(err):  # torch's message here prints "%ld" unformatted
            raise BadInputError("damaged checkpoint (a tensor's storage size does not match its data)", path) from err
        raise BadInputError(f"not a PyTorch checkpoint ({first_line(err)})", path) from err
    except Exception as err:  # torch raises KeyError, EOFError... on junk
        raise BadInputError(f"not a PyTorch checkpoint ({first_line(err)})", path) from err
    if not isinstance(loaded, dict):
        raise BadInputError(f"checkpoint holds a {type(loaded).__name__}, not a dict of tensors", path)
    return loaded
