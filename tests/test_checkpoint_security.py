"""Checkpoint files may not run their code, nor inflate far beyond their size, unless trusted."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from makers.audio import write_tone
from makers.images import write_image
from makers.video import write_video
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.models import checkpoint, weights
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.weights import KnownWeights

runner = CliRunner()


class MarkerOnLoad(torch.nn.Module):
    """A TorchScript module whose `__setstate__` creates a file: code that runs at load time."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.weight = torch.nn.Parameter(torch.ones(2))

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.marker, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.marker = state[0]
        self.training = state[2]
        # torch.from_file(path, shared=True) creates the file; using the result keeps the call in the graph.
        self.weight = state[1] + 0 * torch.from_file(self.marker, True, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_scripted(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def marker_torchscript(tmp_path) -> tuple[Path, Path]:
    """A TorchScript file that writes `marker` when loaded, and that marker's path."""
    marker = tmp_path / "marker"
    return save_scripted(MarkerOnLoad(str(marker)), tmp_path / "payload.pt"), marker


def test_marker_torchscript_runs_its_code_when_trusted(marker_torchscript):
    path, marker = marker_torchscript
    state = load_checkpoint(path, trust=True)
    assert marker.exists()
    torch.testing.assert_close(state["weight"], torch.ones(2))


def test_unknown_torchscript_is_refused_without_trust(marker_torchscript):
    path, marker = marker_torchscript
    with pytest.raises(BadInputError, match=r"payload\.pt: TorchScript .* --trust-checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torchscript_is_hashed_even_when_the_hash_cache_names_a_release(marker_torchscript, monkeypatch):
    path, marker = marker_torchscript
    forged = "ab" * 32
    monkeypatch.setitem(weights.KNOWN, "Forged", KnownWeights("Forged", f"https://x/{forged}/F.pt", forged, 1))
    stat = path.resolve().stat()
    cache = weights._hash_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({str(path.resolve()): [stat.st_size, stat.st_mtime_ns, forged]}))
    assert weights.file_sha256(path) == forged  # the cache believes it: loading must not
    with pytest.raises(BadInputError, match="--trust-checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_file_swapped_in_after_hashing_is_not_the_one_loaded(marker_torchscript, tmp_path, monkeypatch):
    payload, marker = marker_torchscript
    release = save_scripted(torch.nn.Linear(2, 2), tmp_path / "release.pt")
    digest = weights.fresh_sha256(release)
    monkeypatch.setitem(weights.KNOWN, "Tiny", KnownWeights("Tiny", f"https://x/{digest}/release.pt", digest, 1))

    def hash_then_swap(stream):
        hashed = weights.sha256_of_stream(stream)
        os.replace(payload, release)
        return hashed

    monkeypatch.setattr(checkpoint, "sha256_of_stream", hash_then_swap)
    assert set(load_checkpoint(release)) == {"weight", "bias"}
    assert not marker.exists()


ENTRY_POINTS = (
    "depth --model",
    "retrieve --checkpoint",
    "classify-action --checkpoint",
    "audio-tag --checkpoint",
    "models import",
)


def _entry_point_args(kind: str, payload: Path, folder: Path) -> list[str]:
    """Command lines that each reach a different checkpoint loader with `payload`."""
    if kind == "depth --model":
        write_image(folder / "room.png", np.full((32, 32, 3), 128, np.uint8))
        return ["depth", str(folder / "room.png"), "--model", str(payload), "--out", str(folder / "out")]
    if kind == "retrieve --checkpoint":
        (folder / "videos").mkdir()
        write_video(folder / "videos" / "a.mp4", 8)
        index = str(folder / "index")
        return ["retrieve", str(folder / "videos"), "a dog", "--checkpoint", str(payload), "--index", index]
    if kind == "classify-action --checkpoint":
        write_video(folder / "a.mp4", 8)
        return ["classify-action", str(folder / "a.mp4"), "--checkpoint", str(payload), "--labels", "a,b"]
    if kind == "audio-tag --checkpoint":
        write_tone(folder / "a.wav", 440, 0.2, 44100)
        return ["audio-tag", str(folder / "a.wav"), "--checkpoint", str(payload), "--labels", "a,b"]
    assert kind == "models import"
    return ["models", "import", str(payload), "--name", "mine"]


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_every_entry_point_refuses_unknown_torchscript(kind, marker_torchscript, tmp_path, isolated_home):
    path, marker = marker_torchscript
    result = runner.invoke(app, [*_entry_point_args(kind, path, tmp_path), "--device", "cpu"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and str(path) in lines[0] and "--trust-checkpoint" in lines[0]
    assert not marker.exists()
    assert not (isolated_home / ".cache" / "clip").exists()  # models import stored nothing


def _subcommands(group, prefix: str = "") -> dict:
    found = {}
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            found.update(_subcommands(sub, f"{prefix}{name} "))
        else:
            found[prefix + name] = sub
    return found


def test_every_command_that_loads_a_checkpoint_offers_trust_checkpoint():
    """The refusal says "pass --trust-checkpoint": every command that can hit it must accept that option."""
    loaders = {}
    for name, sub in _subcommands(typer.main.get_command(app)).items():
        options = {flag for param in sub.params for flag in getattr(param, "opts", [])}
        if options & {"--model", "--checkpoint", "--saliency-model"} or name == "models import":
            loaders[name] = "--trust-checkpoint" in options
    assert len(loaders) >= 12
    assert [name for name, offered in loaders.items() if not offered] == []


def write_deflate_bomb(path: Path, inflated_bytes: int) -> Path:
    """A torch.save archive whose one tensor is `inflated_bytes` of zeros, deflated to a tiny file."""
    template = path.with_suffix(".template")
    torch.save({"weight": torch.zeros(inflated_bytes // 4)}, template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for entry in source.infolist():
            with source.open(entry) as data, bomb.open(entry.filename, "w") as out:
                while chunk := data.read(1 << 20):
                    out.write(chunk)
    template.unlink()
    return path


def test_checkpoint_that_inflates_far_beyond_its_size_is_refused(tmp_path):
    bomb = write_deflate_bomb(tmp_path / "bomb.pt", 64 << 20)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(BadInputError, match=r"bomb\.pt: zip archive unpacks to 67,1\d\d,\d\d\d bytes"):
        load_checkpoint(bomb)
    result = runner.invoke(app, ["models", "import", str(bomb), "--name", "bomb"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "bomb.pt: zip archive unpacks" in lines[0]


def test_deflated_checkpoint_within_the_inflation_cap_loads(tmp_path):
    small = write_deflate_bomb(tmp_path / "small.pt", 256 << 10)
    assert load_checkpoint(small)["weight"].shape == (64 << 10,)


def test_damaged_zip_checkpoint_is_bad_input(tiny_vit_path, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_vit_path.read_bytes()[:4096])
    with pytest.raises(BadInputError, match=r"cut\.pt: damaged zip archive"):
        load_checkpoint(cut)


# ---------------------------------------------------------------- checksum records and the hash cache


@pytest.fixture
def imported_vit(tiny_vit_path, tmp_path, monkeypatch) -> Path:
    """The tiny ViT imported as `my-vit`, with its `.sha256` record."""
    monkeypatch.setenv("CLIPCLI_MODELS", str(tmp_path / "models"))
    result = runner.invoke(app, ["models", "import", str(tiny_vit_path), "--name", "my-vit"])
    assert result.exit_code == 0, result.output
    return tmp_path / "models" / "my-vit.pt"


def test_verify_rehashes_a_file_whose_size_and_mtime_are_unchanged(imported_vit):
    assert json.loads(runner.invoke(app, ["models", "verify", "my-vit", "--json"]).stdout)["verified"] is True
    stat = imported_vit.stat()
    data = bytearray(imported_vit.read_bytes())
    data[-100] ^= 0xFF
    imported_vit.write_bytes(bytes(data))
    os.utime(imported_vit, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = runner.invoke(app, ["models", "verify", "my-vit", "--json"])
    row = json.loads(result.stdout)
    assert result.exit_code == 2
    assert row["verified"] is False and row["sha256"] == hashlib.sha256(data).hexdigest()


def test_verify_help_says_it_rereads_files():
    result = runner.invoke(app, ["models", "verify", "--help"])
    assert result.exit_code == 0 and "re-reading every file" in " ".join(result.output.split())


@pytest.mark.parametrize("record", ["", "\n", "not-a-checksum  my-vit.pt\n", "\xff\xfe"])
def test_unusable_sha256_record_is_ignored_with_a_notice(imported_vit, record):
    sidecar = imported_vit.with_name("my-vit.pt.sha256")
    sidecar.write_text(record, encoding="latin-1")
    result = runner.invoke(app, ["models", "verify", "my-vit", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is None
    assert f"{sidecar}: not a sha256 record; ignored" in result.stderr
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0
    assert {row["name"]: row["verified"] for row in json.loads(listed.stdout)}["my-vit"] is None


@pytest.mark.parametrize("entry", ["[]", '"text"', "{not json", "5", "[SIZE, MTIME]", "[SIZE, MTIME, 7]"])
def test_unusable_hash_cache_is_rebuilt_when_loading(imported_vit, entry):
    stat = imported_vit.stat()
    stamped = entry.replace("SIZE", str(stat.st_size)).replace("MTIME", str(stat.st_mtime_ns))
    text = stamped if entry in ("[]", '"text"', "{not json") else json.dumps({str(imported_vit): json.loads(stamped)})
    cache = weights._hash_cache_path()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(text)
    assert weights.resolve_weights("my-vit") == imported_vit
    digest = hashlib.sha256(imported_vit.read_bytes()).hexdigest()
    assert json.loads(cache.read_text())[str(imported_vit)] == [stat.st_size, stat.st_mtime_ns, digest]


def test_legacy_checkpoint_claiming_a_huge_storage_is_a_clean_one_line_error(tmp_path):
    """torch's own message for this prints "%ld" unformatted; the file is named and the fault said plainly."""
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    assert int.from_bytes(data[-20:-12], "little") == 3  # the storage's element count, before its 3 floats
    data[-20:-12] = (1_500_000_000).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError) as caught:
        load_checkpoint(path)
    assert str(caught.value) == f"{path}: damaged checkpoint (a tensor's storage size does not match its data)"
