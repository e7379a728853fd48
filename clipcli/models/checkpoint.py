"""Reading checkpoint files without running code from them.

Files are opened as TorchScript archives or with `torch.load(weights_only=True)`;
a pickle that needs arbitrary code is refused unless the user says they trust it.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from clipcli.errors import BadInputError

TRUST_HINT = "pass --trust-checkpoint if you trust its source"


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding a `constants.pkl` or `code/` entry."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith(("/constants.pkl", "/code/")) or "/code/" in n for n in archive.namelist())


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict:
    """The tensors of a checkpoint as a dict, on the CPU.

    TorchScript archives (OpenAI's released `.pt` files) give their module's
    `state_dict()`; pickles are read with `weights_only=True` unless `trust`.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError("no such checkpoint file", path)
    if path.stat().st_size == 0:
        raise BadInputError("checkpoint file is empty", path)
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.load is deprecated, the files are not
                return torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as err:
            raise BadInputError(f"unreadable TorchScript checkpoint ({_first_line(err)})", path) from err
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if not trust and "weights_only" in str(err).lower().replace(" ", "_"):
            raise BadInputError(f"checkpoint needs code execution to load; {TRUST_HINT}", path) from err
        raise BadInputError(f"not a PyTorch checkpoint ({_first_line(err)})", path) from err
    except Exception as err:  # torch raises KeyError, EOFError, RuntimeError... on junk
        raise BadInputError(f"not a PyTorch checkpoint ({_first_line(err)})", path) from err
    if not isinstance(loaded, dict):
        raise BadInputError(f"checkpoint holds a {type(loaded).__name__}, not a dict of tensors", path)
    return loaded


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
