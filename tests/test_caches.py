"""Embedding caches on disk: a damaged file is recomputed with a notice, a read-only folder only costs recomputing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_VIT, build_tiny_clip
from makers.read_only import make_read_only, make_writable, read_only_cli
from makers.report import json_rows
from makers.video import write_video
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.models import load_clip, text_cache
from clipcli.models.weights import _hash_cache_path
from clipcli.pipelines import action, action_text, audio
from clipcli.store.cache import cache_folder, read_cache

runner = CliRunner()
NAMES = ["air drumming", "juggling balls", "riding a bike"]


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("xdg", [None, ""])
def test_cache_folder_falls_back_to_dot_cache_in_home(tmp_path, monkeypatch, xdg):
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert cache_folder("text") == tmp_path / ".cache" / "clipcli" / "text"


def test_every_cache_lives_in_the_one_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clipcli_cache = tmp_path / "xdg" / "clipcli"
    assert cache_folder() == clipcli_cache
    assert _hash_cache_path() == clipcli_cache / "sha256.json"
    assert action_text.text_cache_dir() == clipcli_cache / "actionclip-text"
    assert text_cache.cache_file("f" * 64, build_tiny_clip(TINY_VIT, 0)).parent == clipcli_cache / "text"


def test_read_cache_is_silent_about_a_missing_file_and_reports_a_damaged_one(tmp_path, capsys):
    assert read_cache(tmp_path / "absent.npy", np.load) is None
    assert capsys.readouterr().err == ""
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, rows=np.ones((50, 4)))
    truncate(damaged)
    assert read_cache(damaged, lambda path: np.load(path)["rows"]) is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(damaged) in line and "computing it again" in line


@pytest.mark.parametrize("keep", [0.0, 0.5], ids=["empty", "truncated"])
def test_a_damaged_statement_cache_is_rebuilt_with_a_notice(tiny_vit_path, capsys, keep):
    model, _ = load_clip(tiny_vit_path, "cpu")
    texts = ["a photo of a cat", "a photo of a dog", "a photo of a bird"]
    first = text_cache.text_embeddings(model, texts, model_id="f" * 64)
    cache = text_cache.cache_file("f" * 64, model)
    truncate(cache, keep)
    text_cache._MEMORY.clear()
    capsys.readouterr()
    again = text_cache.text_embeddings(model, texts, model_id="f" * 64)
    torch.testing.assert_close(again, first)
    assert str(cache) in capsys.readouterr().err
    with np.load(cache) as stored:
        assert stored["texts"].tolist() == texts and stored["embeddings"].shape == (3, 32)


def test_an_empty_action_prompt_cache_is_rebuilt_with_a_notice(isolated_home, capsys):
    first = action.text_features(build_tiny_clip(TINY_VIT, 5), NAMES, model_id="abc")
    (cache,) = (isolated_home / ".cache" / "clipcli").rglob("*.npy")
    cache.write_bytes(b"")  # created, then the disk filled up before a byte was written
    capsys.readouterr()
    again = action.text_features(build_tiny_clip(TINY_VIT, 5), NAMES, model_id="abc")
    torch.testing.assert_close(again, first)
    assert str(cache) in capsys.readouterr().err
    assert np.load(cache).shape == (48, 32)


def test_a_truncated_audio_image_cache_is_rebuilt_with_a_notice(tmp_path, capsys):
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((8, 8, 3), 200, np.uint8))
    file = tmp_path / "cache" / "images.npz"
    cache = audio.ImageFeatureCache(file)
    cache.put(image, np.arange(16, dtype=np.float32))
    cache.save()
    truncate(file)
    capsys.readouterr()
    damaged = audio.ImageFeatureCache(file)
    assert damaged.get(image) is None
    assert str(file) in capsys.readouterr().err
    damaged.put(image, np.ones(16, np.float32))
    damaged.save()
    np.testing.assert_array_equal(audio.ImageFeatureCache(file).get(image), np.ones(16, np.float32))


def test_classify_action_with_a_read_only_cache_folder_recomputes(tmp_path, tiny_vit_path, isolated_home):
    video = write_video(tmp_path / "a.mp4", 30, fps=10)
    folder = isolated_home / ".cache" / "clipcli" / "actionclip-text"
    folder.mkdir(parents=True)
    arguments = [video, "--model", tiny_vit_path, "--labels", ",".join(NAMES), "--frames", 4, "--json"]
    make_read_only(folder)
    try:
        child = read_only_cli("classify-action", *arguments)
    finally:
        make_writable(folder)
    assert child.returncode == 0, child.stderr.decode()
    assert list(folder.iterdir()) == []
    here = runner.invoke(app, ["classify-action", *map(str, arguments)])
    assert here.exit_code == 0, here.output
    predicted = [row["predictions"] for row in json_rows(child.stdout.decode())]
    expected = [row["predictions"] for row in json_rows(here.stdout)]
    assert [[p["label"] for p in row] for row in predicted] == [[p["label"] for p in row] for row in expected]
    for row, reference in zip(predicted, expected, strict=True):
        for prediction, wanted in zip(row, reference, strict=True):
            assert prediction["probability"] == pytest.approx(wanted["probability"], abs=1e-5)
