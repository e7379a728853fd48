"""Shared fixtures: tiny CLIP checkpoints, an isolated home, and a network guard.

No test may reach the network or need real weights: tiny models are built
with `clip.model.CLIP`, saved as state dicts, and loaded through the same
`load_clip` users hit.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
import torch
from clip.model import CLIP

# Small but architecture-true: the ResNet keeps RN50's layer4 = 2 x embed_dim
# ratio (DepthCLIP relies on it); both use the real 49408-token vocabulary so
# `clip.tokenize` works unchanged. `build_model` infers heads as width // 64,
# so text and ViT widths are 64 (one head).
TINY_RESNET = dict(
    embed_dim=256,
    image_resolution=224,
    vision_layers=(1, 1, 1, 1),
    vision_width=16,
    vision_patch_size=None,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)
TINY_VIT = dict(
    embed_dim=32,
    image_resolution=224,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=32,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)


def build_tiny_clip(config: dict, seed: int) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(**config).eval()


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory) -> dict[str, object]:
    """State-dict checkpoints of a tiny ResNet and a tiny ViT CLIP, written once per session."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    files = {}
    for name, config, seed in (("rn", TINY_RESNET, 0), ("vit", TINY_VIT, 1)):
        path = folder / f"tiny-{name}.pt"
        torch.save(build_tiny_clip(config, seed).state_dict(), path)
        files[name] = path
    return files


@pytest.fixture
def tiny_rn_path(tiny_clip_files):
    return tiny_clip_files["rn"]


@pytest.fixture
def tiny_vit_path(tiny_clip_files):
    return tiny_clip_files["vit"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own HOME and caches, so nothing reads or writes the user's."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("CLIPCLI_MODELS", raising=False)
    from clipcli.models import clip_loader

    clip_loader.clear_cache()
    return home


def _is_local(address) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX and friends
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that tries to open a connection beyond this machine."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guarded(real):
        def connect(self, address):
            if not _is_local(address):
                attempts.append(address)
                raise ConnectionRefusedError(f"network access in a test: {address}")
            return real(self, address)

        return connect

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local((host,)):
            attempts.append(host)
            raise socket.gaierror(f"network access in a test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    if attempts:
        pytest.fail(f"test tried to reach the network: {attempts}")


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance for the whole run (2 CPUs, no dashboard), shared by every `--cluster` test.

    Its workers import test modules (the jobs some tests define), so they get the tests' import path, and
    keep their caches in a home of their own (they start before any test's `isolated_home`).
    """
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipcli[ray]')")
    import os
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    os.environ["PYTHONPATH"] = os.pathsep.join([str(tests), str(tests.parent), os.environ.get("PYTHONPATH", "")])
    home = tmp_path_factory.mktemp("ray_home")
    with pytest.MonkeyPatch.context() as patch:  # Ray's processes keep the environment they start with
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            _node_ip_address="127.0.0.1",
        )
    yield ray
    ray.shutdown()
