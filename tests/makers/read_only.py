"""Run clipcli in a child process that file permissions bind, even when the tests run as root.

Root ignores permission bits through its DAC capabilities; the child drops
them from its bounding set before `exec`, so a folder chmod-ed to 0555 is as
read-only for it as for any user. `read_only_cli` skips the test where that
cannot be arranged (not Linux, or a root without CAP_SETPCAP).
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_PR_CAPBSET_DROP = 24
_DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_dac_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in _DAC_CAPABILITIES:
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    preexec = _drop_dac_capabilities if os.geteuid() == 0 else None
    return subprocess.run(argv, capture_output=True, preexec_fn=preexec, timeout=timeout, check=False)


@functools.cache
def _permissions_bind() -> bool:
    """Whether a child started by `_run` is refused a write into a 0555 folder (Linux only)."""
    if sys.platform != "linux":
        return False
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            probe = _run([sys.executable, "-c", f"open({str(Path(folder) / 'x')!r}, 'w')"], timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        finally:
            os.chmod(folder, 0o755)
    return probe.returncode != 0


def make_read_only(folder: Path) -> None:
    """Strip the write bits of a folder and everything in it."""
    for path in [*folder.rglob("*"), folder]:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


def read_only_cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m clipcli ARGS` in a child bound by file permissions (output as bytes); skips where none can be."""
    if not _permissions_bind():
        pytest.skip("cannot make file permissions bind a child process here")
    return _run([sys.executable, "-m", "clipcli", *(str(arg) for arg in args)], timeout)
