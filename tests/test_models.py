"""Weights resolution, checksums, downloads, imports and load_clip."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import threading
import urllib.error
import warnings
import zipfile
from pathlib import Path

import clip
import pytest
import torch
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError, WeightsUnavailableError
from clipcli.models import clip_loader, load_clip, resolve_device, weights
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.weights import KnownWeights
from clipcli.pipelines import weights as weights_pipeline


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_release(tiny_rn_path, monkeypatch):
    """Pretend the tiny ResNet file is a published release called `TinyRN`."""
    known = KnownWeights("TinyRN", f"https://example.invalid/{sha256(tiny_rn_path)}/TinyRN.pt", sha256(tiny_rn_path), 1)
    monkeypatch.setitem(weights.KNOWN, known.name, known)
    return known


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights.urllib.request, "urlopen", refuse)


def test_load_clip_matches_clip_load(tiny_rn_path, tiny_vit_path):
    image = torch.rand(2, 3, 224, 224)
    text = clip.tokenize(["a photo of a dog", "a diagram"])
    for path in (tiny_rn_path, tiny_vit_path):
        ours, our_preprocess = load_clip(path, device="cpu")
        theirs, their_preprocess = clip.load(str(path), device="cpu", jit=False)
        assert ours.dtype == torch.float32 and not ours.training
        assert str(our_preprocess) == str(their_preprocess)
        with torch.no_grad():
            torch.testing.assert_close(ours.encode_image(image), theirs.encode_image(image))
            torch.testing.assert_close(ours.encode_text(text), theirs.encode_text(text))


def test_load_clip_is_cached_per_process(tiny_vit_path):
    first = load_clip(tiny_vit_path, device="cpu")
    assert load_clip(str(tiny_vit_path), device="cpu")[0] is first[0]
    clip_loader.clear_cache()
    assert load_clip(tiny_vit_path, device="cpu")[0] is not first[0]


@pytest.fixture
def traced_vit(tiny_vit_path, tmp_path):
    """The tiny ViT traced to a TorchScript archive, as OpenAI's releases are, and the model it came from."""
    model, _ = load_clip(tiny_vit_path, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, (torch.rand(1, 3, 224, 224), clip.tokenize(["x"])), check_trace=False)
    jit_path = tmp_path / "jit.pt"
    traced.save(str(jit_path))
    return jit_path, model


def test_known_release_torchscript_loads_like_state_dict(traced_vit, monkeypatch):
    jit_path, model = traced_vit
    digest = sha256(jit_path)
    monkeypatch.setitem(weights.KNOWN, "TinyJit", KnownWeights("TinyJit", f"https://x/{digest}/jit.pt", digest, 1))
    reloaded, _ = load_clip(jit_path, device="cpu")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)


def test_unknown_torchscript_clip_loads_only_when_trusted(traced_vit):
    jit_path, model = traced_vit
    with pytest.raises(BadInputError, match="jit.pt: TorchScript archive that is no known release"):
        load_clip(jit_path, device="cpu")
    reloaded, _ = load_clip(jit_path, device="cpu", trust_checkpoint=True)
    torch.testing.assert_close(reloaded.state_dict()["text_projection"], model.state_dict()["text_projection"])


def test_models_folder_env_wins_over_clip_cache(tiny_rn_path, tiny_vit_path, tmp_path, monkeypatch, isolated_home):
    env_folder = tmp_path / "models"
    env_folder.mkdir()
    (env_folder / "mine.pt").write_bytes(tiny_vit_path.read_bytes())
    cache = isolated_home / ".cache" / "clip"
    cache.mkdir(parents=True)
    (cache / "mine.pt").write_bytes(tiny_rn_path.read_bytes())
    assert weights.resolve_weights("mine") == cache / "mine.pt"
    monkeypatch.setenv("CLIPCLI_MODELS", str(env_folder))
    assert weights.resolve_weights("mine") == env_folder / "mine.pt"
    model, _ = load_clip("mine", device="cpu")
    assert model.visual.__class__.__name__ == "VisionTransformer"


def test_known_name_found_in_clip_cache_is_verified(fake_release, tiny_rn_path, isolated_home, offline):
    cache = isolated_home / ".cache" / "clip"
    cache.mkdir(parents=True)
    (cache / "TinyRN.pt").write_bytes(tiny_rn_path.read_bytes())
    assert weights.resolve_weights("TinyRN") == cache / "TinyRN.pt"
    status = weights.verify("TinyRN")
    assert status.verified is True and status.size == tiny_rn_path.stat().st_size


def test_corrupt_copy_is_not_used_and_offline_message_says_what_to_do(fake_release, isolated_home, offline):
    cache = isolated_home / ".cache" / "clip"
    cache.mkdir(parents=True)
    (cache / "TinyRN.pt").write_bytes(b"not the release")
    with pytest.raises(WeightsUnavailableError) as err:
        load_clip("TinyRN", device="cpu")
    message = str(err.value)
    assert "TinyRN.pt" in message and fake_release.sha256 in message and str(cache) in message
    assert "wrong sha256" in message and "\n" not in message
    assert err.value.exit_code == 3


def test_unknown_name_and_missing_path_are_bad_input():
    with pytest.raises(BadInputError, match="unknown model 'ViT-Z/99'"):
        weights.resolve_weights("ViT-Z/99")
    with pytest.raises(BadInputError, match="no such checkpoint file"):
        weights.resolve_weights("missing/model.pt")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    """A loopback HTTP server over tmp_path/www, to exercise the real download code."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_checksum_and_stores_file(local_server, tiny_rn_path, monkeypatch, isolated_home):
    root, base = local_server
    digest = sha256(tiny_rn_path)
    (root / digest).mkdir()
    (root / digest / "TinyRN.pt").write_bytes(tiny_rn_path.read_bytes())
    monkeypatch.setitem(weights.KNOWN, "TinyRN", KnownWeights("TinyRN", f"{base}/{digest}/TinyRN.pt", digest, 0))
    path = weights.resolve_weights("TinyRN")
    assert path == isolated_home / ".cache" / "clip" / "TinyRN.pt"
    assert sha256(path) == digest


def test_download_with_wrong_checksum_leaves_nothing(local_server, tiny_rn_path, monkeypatch, isolated_home):
    root, base = local_server
    (root / "TinyRN.pt").write_bytes(b"tampered")
    monkeypatch.setitem(weights.KNOWN, "TinyRN", KnownWeights("TinyRN", f"{base}/TinyRN.pt", "0" * 64, 0))
    with pytest.raises(WeightsUnavailableError, match="wrong sha256"):
        weights.resolve_weights("TinyRN")
    folder = isolated_home / ".cache" / "clip"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_untrusted_pickle_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "with_code.pt"
    torch.save({"args": argparse.Namespace(lr=1.0), "w": torch.ones(2)}, path)
    with pytest.raises(BadInputError, match="--trust-checkpoint"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust=True)["args"].lr == 1.0


def test_non_checkpoints_are_bad_input(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(BadInputError, match="notes.pt: not a PyTorch checkpoint"):
        load_clip(text, device="cpu")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match="empty"):
        load_clip(empty, device="cpu")
    other = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.ones(2, 2)}, other)
    with pytest.raises(BadInputError, match="not a CLIP checkpoint"):
        load_clip(other, device="cpu")


def test_import_stores_known_release_under_its_name(fake_release, tiny_rn_path, isolated_home):
    status = weights.import_weights(tiny_rn_path)
    assert status.name == "TinyRN" and status.verified is True
    assert status.path == isolated_home / ".cache" / "clip" / "TinyRN.pt"


def test_import_custom_needs_name_then_loads_by_name(tiny_vit_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLI_MODELS", str(tmp_path / "models"))
    with pytest.raises(BadInputError, match="--name"):
        weights.import_weights(tiny_vit_path)
    assert not (tmp_path / "models").exists()
    status = weights.import_weights(tiny_vit_path, "my-vit")
    assert status.path == tmp_path / "models" / "my-vit.pt" and status.verified is True
    assert "my-vit" in weights.custom_names()
    model, _ = load_clip("my-vit", device="cpu")
    assert model.visual.conv1.weight.shape[0] == 64
    # A changed file no longer matches the sha256 recorded at import.
    status.path.write_bytes(status.path.read_bytes() + b"x")
    assert weights.verify("my-vit").verified is False


def test_sha256_cache_notices_changes(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc")
    assert weights.file_sha256(path) == hashlib.sha256(b"abc").hexdigest()
    path.write_bytes(b"abcd")
    assert weights.file_sha256(path) == hashlib.sha256(b"abcd").hexdigest()


def test_device_policy(capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(BadInputError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(BadInputError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(BadInputError, match="CUDA device"):
            resolve_device(f"cuda:{count}")


def test_over_long_prompt_is_bad_input_naming_it(tiny_vit_path):
    from clipcli.models.prompts import text_classifier

    model, _ = load_clip(tiny_vit_path, device="cpu")
    long_label = "a very long action name " * 20
    with pytest.raises(BadInputError, match="prompt too long for CLIP's 77-token context: 'a very long action"):
        text_classifier(model, [["short"], [long_label]])


def test_trusted_import_of_torchscript_stores_plain_tensors_that_load_by_name_untrusted(
    traced_vit, tmp_path, monkeypatch
):
    jit_path, model = traced_vit
    monkeypatch.setenv("CLIPCLI_MODELS", str(tmp_path / "models"))
    with pytest.raises(BadInputError, match="--trust-checkpoint"):
        weights_pipeline.import_model(jit_path, "my-jit")
    assert not (tmp_path / "models" / "my-jit.pt").exists()
    row = weights_pipeline.import_model(jit_path, "my-jit", trust=True)
    stored = tmp_path / "models" / "my-jit.pt"
    assert row["verified"] is True
    assert not any("/code/" in entry for entry in zipfile.ZipFile(stored).namelist())
    reloaded, _ = load_clip("my-jit", device="cpu")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)
    again = weights_pipeline.import_model(jit_path, "my-jit", trust=True)  # the same file again: nothing to do
    assert again["verified"] is True and again["path"] == row["path"]


def test_import_under_a_name_that_holds_another_model_is_refused_unless_overwrite(
    tiny_rn_path, tiny_vit_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("CLIPCLI_MODELS", str(tmp_path / "models"))
    first = weights.import_weights(tiny_rn_path, "a/b")
    again = weights.import_weights(tiny_rn_path, "a/b")  # the same file again: nothing to do
    assert again.path == first.path and again.verified is True
    for name in ("a/b", "a-b"):  # both are stored as a-b.pt
        with pytest.raises(BadInputError, match="already holds another model; pass --overwrite"):
            weights.import_weights(tiny_vit_path, name)
    assert sha256(first.path) == sha256(tiny_rn_path)
    replaced = weights.import_weights(tiny_vit_path, "a-b", overwrite=True)
    assert sha256(replaced.path) == sha256(tiny_vit_path) and replaced.verified is True


def test_models_import_cli_refuses_to_replace_a_model_in_one_line_and_replaces_with_overwrite(
    tiny_rn_path, tiny_vit_path, tmp_path, monkeypatch
):
    monkeypatch.setenv("CLIPCLI_MODELS", str(tmp_path / "models"))
    invoke = functools.partial(CliRunner().invoke, app)
    assert invoke(["models", "import", str(tiny_rn_path), "--name", "mine"]).exit_code == 0
    refused = invoke(["models", "import", str(tiny_vit_path), "--name", "mine"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {tiny_vit_path}: {tmp_path / 'models' / 'mine.pt'} already holds another model; "
        "pass --overwrite to replace it"
    ]
    assert invoke(["models", "import", str(tiny_vit_path), "--name", "mine", "--overwrite"]).exit_code == 0
    assert sha256(tmp_path / "models" / "mine.pt") == sha256(tiny_vit_path)
