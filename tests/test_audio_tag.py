"""AudioCLIP: the ESResNeXt-fbsp tower, strict checkpoint loading, the zero-shot protocol, `audio-tag`.

The checkpoint built here has the released layout: a small CLIP ResNet whose
embedding is 1024-d (as RN50's), the full-size audio tower (370 `audio.*`
tensors, names and shapes as released) and the two AudioCLIP logit scales.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from clip.model import CLIP
from conftest import TINY_RESNET, build_tiny_clip
from makers.audio import write_noise, write_tone
from makers.report import json_rows
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.models import audioclip as audioclip_module
from clipcli.models import weights
from clipcli.models.audio_tower import ESResNeXtFBSP, frame_count, int16_to_unit
from clipcli.models.audioclip import AudioCLIP, audioclip_from_state_dict
from clipcli.pipelines import audio as audio_pipeline
from clipcli.pipelines.audio import load_audioclip

runner = CliRunner()
SR = 44100
WINDOW = 220500


def run_cli(*args: str):
    return runner.invoke(app, ["audio-tag", *args])


@pytest.fixture(scope="module")
def audioclip_state() -> dict[str, torch.Tensor]:
    """A released-layout AudioCLIP state dict with random weights (BN statistics and fbsp parameters too)."""
    clip_model = build_tiny_clip({**TINY_RESNET, "embed_dim": 1024}, seed=3)
    torch.manual_seed(4)
    model = AudioCLIP(clip_model, ESResNeXtFBSP(embed_dim=1024))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, buffer in model.audio.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1, generator=generator)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5, generator=generator)
        model.audio.fbsp.m.uniform_(0.0, 2.0, generator=generator)
        model.audio.fbsp.fb.uniform_(0.7, 1.5, generator=generator)
        model.logit_scale_ai.fill_(math.log(54.0))
        model.logit_scale_at.fill_(math.log(250.0))  # above the clamp: used as 100
    return {key: value.clone() for key, value in model.checkpoint_state_dict().items()}


@pytest.fixture(scope="module")
def audioclip_file(audioclip_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("audioclip") / "tiny-audioclip.pt"
    torch.save(audioclip_state, path)
    return path


@pytest.fixture
def model(audioclip_file):
    return load_audioclip(audioclip_file, device="cpu")


# ---------------------------------------------------------------- the audio tower


def test_audio_tower_has_the_released_key_layout():
    state = ESResNeXtFBSP().state_dict()
    assert len(state) == 370
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    assert shapes["fc.weight"] == (1024, 2048) and shapes["fc.bias"] == (1024,)
    assert shapes["fbsp.m"] == shapes["fbsp.fb"] == shapes["fbsp.fc"] == (1025,)
    assert shapes["fbsp.bias"] == (0,)
    assert shapes["window"] == (1654,)
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.conv2.weight"] == (128, 4, 3, 3)  # 32 groups of 4 channels
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer4.2.bn3.running_var"] == (2048,)
    assert shapes["att1.conv_depth.weight"] == (64, 1, 3, 1) and shapes["att1.conv_point.weight"] == (256, 64, 1, 1)
    assert shapes["att2.conv_depth.weight"] == (256, 1, 1, 5)
    assert shapes["att5.conv_depth.weight"] == (2048, 1, 3, 5) and "att5.bn.num_batches_tracked" in shapes
    assert sum(1 for key in state if key.startswith("layer3.")) == 6 * 18 + 6


def test_full_audioclip_layout_matches_the_release_totals():
    """RN50 CLIP + audio tower + two scales: 861 tensors, 134,246,925 values (537 MB in fp32)."""
    with torch.device("meta"):
        clip_model = CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)
        state = AudioCLIP(clip_model, ESResNeXtFBSP()).checkpoint_state_dict()
    assert len(state) == 861
    assert sum(value.numel() for value in state.values()) == 134_246_925
    assert sum(key.startswith("visual.") for key in state) == 339
    assert sum(key.startswith("transformer.") for key in state) == 144
    assert sum(key.startswith("audio.") for key in state) == 370
    assert {"logit_scale", "logit_scale_ai", "logit_scale_at", "text_projection"} <= set(state)


def test_window_is_the_periodic_blackman_harris():
    n = np.arange(1654)
    a0, a1, a2, a3 = 0.35875, 0.48829, 0.14128, 0.01168
    phase = 2 * np.pi * n / 1654  # periodic ("fftbins"): the period is the window length
    expected = a0 - a1 * np.cos(phase) + a2 * np.cos(2 * phase) - a3 * np.cos(3 * phase)
    np.testing.assert_allclose(ESResNeXtFBSP().window.numpy(), expected, atol=1e-7)


def test_int16_scale_and_frame_count():
    values = int16_to_unit(torch.tensor([-32768.0, 0.0, 32767.0], dtype=torch.float64))
    np.testing.assert_allclose(values.numpy(), [-1.0, 1.0 / 65535.0, 1.0], rtol=0, atol=1e-15)
    sizes = (1, 1654, 1655, 1654 + 561, 1654 + 562, 220500, 176400)
    assert [frame_count(n) for n in sizes] == [1, 1, 2, 2, 3, 392, 313]


def _numpy_frames(signal: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Official framing, written out: zero-pad symmetrically, 1654-sample hops of 561, window, centre in 2048."""
    count = 1 + math.ceil((len(signal) - 1654) / 561)
    total = (count - 1) * 561 + 1654 - len(signal)
    padded = np.concatenate([np.zeros(total // 2), signal, np.zeros(total - total // 2)])
    frames = np.stack([padded[i * 561 : i * 561 + 1654] * window for i in range(count)])
    return np.pad(frames, [(0, 0), (197, 197)])


def test_fbsp_at_initialisation_is_a_windowed_dft():
    """m=0, fb=1, fc=k: bin k is exp(-i k pi linspace(-1, 1, 2048)) / sqrt(2048), a 2047-point DFT up to sign."""
    tower = ESResNeXtFBSP().eval()
    int16_scale = np.random.default_rng(0).uniform(-16000, 16000, WINDOW)
    unit = (int16_scale + 32768.0) * 2.0 / 65535.0 - 1.0  # the official scale() to [-1, 1]
    with torch.no_grad():
        spec = tower.spectrogram(torch.from_numpy(unit).float()[None])
        bands = tower.log_power_bands(torch.from_numpy(int16_scale).float()[None])
    assert spec.shape == (1, 1025, 392, 2) and bands.shape == (1, 3, 341, 392)

    frames = _numpy_frames(unit, tower.window.double().numpy())
    t = np.pi * np.linspace(-1.0, 1.0, 2048) + 1e-8
    kernel = np.exp(-1j * np.arange(1025)[:, None] * t[None]) / np.sqrt(2048)
    expected = frames @ kernel.T  # [392, 1025]
    ours = spec[0, ..., 0].numpy().T + 1j * spec[0, ..., 1].numpy().T
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ours, expected, atol=2e-4 * scale)
    # The same numbers from numpy's FFT: the last sample is a zero pad, so 2048 taps = a 2047-point DFT.
    fft = np.fft.fft(frames[:, :2047], axis=-1)[:, :1025] * (-1.0) ** np.arange(1025) / np.sqrt(2048)
    np.testing.assert_allclose(expected, fft * np.exp(-1j * np.arange(1025) * 1e-8), atol=1e-9 * scale)

    # The image: 10 log10 power of bins 0..1022 in three bands of 341 (no mel scale).
    power_db = 10 * np.log10(np.abs(expected[:, :1023]) ** 2).T.reshape(3, 341, 392)
    strong = power_db > power_db.max() - 40  # float32 phases limit the precision of much weaker bins
    np.testing.assert_allclose(bands[0].numpy()[strong], power_db[strong], atol=2e-2)


def test_fbsp_kernel_matches_the_wavelet_formula_for_trained_parameters():
    tower = ESResNeXtFBSP()
    rng = np.random.default_rng(1)
    m, fb = rng.uniform(0.3, 3.0, 1025), rng.uniform(0.5, 2.0, 1025)
    fc = np.arange(1025) + rng.normal(0, 2, 1025)
    with torch.no_grad():
        for name, value in (("m", m), ("fb", fb), ("fc", fc)):
            getattr(tower.fbsp, name).copy_(torch.from_numpy(value))
        kernel = tower.fbsp.kernel(2048).double().numpy()
    m32, fb32, fc32 = (np.float32(v).astype(np.float64)[:, None] for v in (m, fb, fc))
    t = np.pi * np.linspace(-1.0, 1.0, 2048)[None] + 1e-8
    x = fb32 * t / (m32 + 1e-8)
    sinc = np.sin(x) / x
    expected = np.sqrt(fb32) * (sinc + 0j) ** m32 * np.exp(-1j * fc32 * t) / np.sqrt(2048)
    assert np.iscomplexobj(expected) and (sinc < 0).any()  # negative lobes give complex envelopes
    np.testing.assert_allclose(kernel[..., 0] + 1j * kernel[..., 1], expected, atol=2e-5)


# ---------------------------------------------------------------- loading


def test_load_audioclip_builds_an_eval_model_with_the_checkpoint_weights(model, audioclip_state, audioclip_file):
    assert isinstance(model, AudioCLIP) and not model.training and not model.audio.training
    saved = model.checkpoint_state_dict()
    assert set(saved) == set(audioclip_state)
    for key, value in audioclip_state.items():
        assert torch.equal(saved[key], value), key  # fp32 exactly: no fp16 rounding left by build_model
    assert model.logit_scale_ai.item() == pytest.approx(math.log(54.0))
    assert model.logit_scale_at.item() == pytest.approx(math.log(250.0))
    assert AudioCLIP.scale(model.logit_scale_at).item() == 100.0
    waveform = torch.randn(2, 6000) * 3000
    with torch.no_grad():
        audio = model.encode_audio(waveform)
        text = model.encode_text(["dog", ["clock alarm", "cat"]])
        image = model.encode_image(torch.rand(1, 3, 224, 224))
        joined = model.encode_text(["clock alarm, cat"])
    assert audio.shape == (2, 1024) and text.shape == (2, 1024) and image.shape == (1, 1024)
    torch.testing.assert_close(text[1:], joined)  # label lists are joined with ", " as officially
    assert load_audioclip(str(audioclip_file), device="cpu") is model  # cached per process


def test_channels_are_summed_before_the_projection(model):
    """Duplicated stereo is not mono: pooled features add up before `fc` (which has a bias)."""
    mono = torch.randn(1, 6000) * 2000
    with torch.no_grad():
        one = model.encode_audio(mono)
        two = model.encode_audio(torch.stack([mono, mono], dim=1))
    bias = model.audio.fc.bias
    torch.testing.assert_close(two - bias, 2 * (one - bias), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(one, two)


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda sd: sd.pop("audio.att3.bn.running_mean"), "missing keys audio.att3.bn.running_mean"),
        (lambda sd: sd.pop("logit_scale_at"), "missing keys logit_scale_at"),
        (lambda sd: sd.pop("visual.bn1.weight"), "missing keys visual.bn1.weight"),
        (lambda sd: sd.__setitem__("audio.extra.weight", torch.zeros(1)), "unexpected keys audio.extra.weight"),
        (lambda sd: sd.__setitem__("visual.extra", torch.zeros(1)), "unexpected keys visual.extra"),
        (lambda sd: sd.__setitem__("audio.fc.weight", torch.zeros(527, 2048)), "audio.fc.weight has shape (527, 2048)"),
    ],
)
def test_loading_is_strict_and_names_the_keys(audioclip_state, change, named):
    state = dict(audioclip_state)
    change(state)
    with pytest.raises(BadInputError) as err:
        audioclip_from_state_dict(state, "cpu", "ckpt.pt")
    assert named in str(err.value) and str(err.value).startswith("ckpt.pt: ")
    assert err.value.exit_code == 2


def test_clip_only_and_audio_head_only_files_are_refused(tiny_rn_path, audioclip_state, tmp_path):
    with pytest.raises(BadInputError, match="no audio.\\* keys: a CLIP checkpoint, not AudioCLIP"):
        load_audioclip(tiny_rn_path, device="cpu")
    head = {key.removeprefix("audio."): value for key, value in audioclip_state.items() if key.startswith("audio.")}
    with pytest.raises(BadInputError, match="ESResNeXt-fbsp audio head without CLIP towers"):
        audioclip_from_state_dict(head, "cpu", "ESRNXFBSP.pt")
    with pytest.raises(BadInputError, match="expected a flat state dict of tensors"):
        audioclip_from_state_dict({"state_dict": dict(audioclip_state)}, "cpu", "wrapped.pt")
    with pytest.raises(BadInputError, match="no audio.\\* keys: not an AudioCLIP checkpoint"):
        audioclip_from_state_dict({"weight": torch.zeros(2)}, "cpu", "other.pt")


def test_release_named_files_are_checked_against_size_and_sha256(audioclip_file, tmp_path, monkeypatch):
    short = tmp_path / "AudioCLIP-Full-Training.pt"
    short.write_bytes(b"x" * 100)
    with pytest.raises(BadInputError, match="100 bytes where the audioclip-full release has 537,302,068"):
        load_audioclip(short, device="cpu")
    copy = tmp_path / "AudioCLIP-Partial-Training.pt"
    copy.write_bytes(audioclip_file.read_bytes())
    fake = weights.KnownWeights(
        "audioclip-partial", "https://x/AudioCLIP-Partial-Training.pt", "0" * 64, copy.stat().st_size
    )
    monkeypatch.setattr(audioclip_module, "AUDIOCLIP_WEIGHTS", (fake,))
    with pytest.raises(BadInputError, match="sha256 differs from the audioclip-partial release"):
        load_audioclip(copy, device="cpu")
    right = weights.KnownWeights(fake.name, fake.url, weights.file_sha256(copy), fake.approx_bytes)
    monkeypatch.setattr(audioclip_module, "AUDIOCLIP_WEIGHTS", (right,))
    audioclip_module.check_release_copy(copy)  # the matching file passes


def test_releases_are_known_to_models_commands(monkeypatch, tmp_path):
    full, partial = weights.KNOWN["audioclip-full"], weights.KNOWN["audioclip-partial"]
    assert full.family == partial.family == "audioclip"
    assert full.sha256 == "2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44"
    assert partial.sha256 == "1921885b6c3b5de0619f2ef4a9700ecbade758a398b34eb064230c30baef0c75"
    assert full.approx_bytes == partial.approx_bytes == 537_302_068
    assert full.url.endswith("/v0.1/AudioCLIP-Full-Training.pt") and partial.filename == "AudioCLIP-Partial-Training.pt"
    listed = {row["name"]: row for row in json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)}
    assert listed["audioclip-full"]["known"] is True and listed["audioclip-full"]["present"] is False

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(weights.urllib.request, "urlopen", refuse)
    result = runner.invoke(app, ["models", "verify", "audioclip-partial"])
    assert result.exit_code == 3 and "AudioCLIP-Partial-Training.pt" in result.stderr
    assert partial.sha256 in result.stderr
    sound = tmp_path / "a.wav"
    write_tone(sound, 440, 0.2, SR)
    result = run_cli(str(sound), "--checkpoint", "audioclip-full", "--device", "cpu")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 3 and len(lines) == 1 and "AudioCLIP-Full-Training.pt" in lines[0]
    assert "537 MB" in lines[0] and full.url in lines[0]


def test_custom_audioclip_file_imports_and_is_used_by_name(audioclip_file, tmp_path, isolated_home):
    result = runner.invoke(app, ["models", "import", str(audioclip_file), "--name", "my-audioclip", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verified"] is True
    clip_file = tmp_path / "a.wav"
    write_tone(clip_file, 440, 0.3, SR)
    args = ["--checkpoint", "my-audioclip", "--device", "cpu", "--json", "--top-k", "2", "--window", "0.3"]
    result = run_cli(str(clip_file), *args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"] == "my-audioclip"


# ---------------------------------------------------------------- audio input


def test_48k_stereo_becomes_44k1_mono_on_the_int16_scale(tmp_path):
    path = tmp_path / "stereo48k.wav"
    write_tone(path, 1000.0, 2.0, 48000, channels=2, amplitude=0.5, subtype="FLOAT")
    wave = audio_pipeline.load_waveform(path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(len(wave) - 88200) <= 1
    assert np.abs(wave[1000:-1000]).max() == pytest.approx(0.5 * 32768, rel=0.01)
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) * SR / len(wave) == pytest.approx(1000.0, abs=1.0)
    raw = audio_pipeline.load_waveform(path, raw_scale=True)
    np.testing.assert_allclose(raw * 32768, wave, rtol=1e-6)


def test_int16_files_reach_the_model_as_their_integer_values(tmp_path):
    """The ESC-50 loader's librosa.load(...) * 32768 gives back the stored int16 samples exactly."""
    samples = np.random.default_rng(2).integers(-32768, 32767, 44100, dtype=np.int16)
    path = tmp_path / "pcm16.wav"
    sf.write(path, samples, SR, subtype="PCM_16")
    np.testing.assert_array_equal(audio_pipeline.load_waveform(path), samples.astype(np.float32))


def test_windows_cover_long_clips_and_short_clips_are_centre_padded():
    wave = np.arange(12 * SR, dtype=np.float32)
    windows, starts = audio_pipeline.split_windows(wave, WINDOW)
    assert windows.shape == (3, WINDOW) and starts[0] == 0 and starts[-1] == len(wave) - WINDOW
    assert starts == sorted(starts) and all(b - a <= WINDOW for a, b in zip(starts, starts[1:], strict=False))
    for start, window in zip(starts, windows, strict=True):
        np.testing.assert_array_equal(window, wave[start : start + WINDOW])
    exact, exact_starts = audio_pipeline.split_windows(wave[:WINDOW], WINDOW)
    assert exact.shape == (1, WINDOW) and exact_starts == [0]

    for length, window in ((1000, 1005), (1000, 1007), (3, 10)):  # left pad round(2.5)=2, round(3.5)=4, 4
        short = np.arange(5, 5 + length, dtype=np.float32)
        (padded,), _ = audio_pipeline.split_windows(short, window)
        left = int(round(0.5 * (window - length)))
        assert padded.shape == (window,)
        np.testing.assert_array_equal(padded[left : left + length], short)
        assert (padded[:left] == short[0]).all() and (padded[left + length :] == short[-1]).all()
    assert audio_pipeline.pad_to_window(np.zeros(5, np.float32), 10)[:2].tolist() == [0, 0]


# ---------------------------------------------------------------- labels and scoring


def test_label_sets_ship_with_their_official_counts_and_order():
    esc50, us8k = audio_pipeline.builtin_labels("esc50"), audio_pipeline.builtin_labels("us8k")
    assert len(esc50) == len(set(esc50)) == 50 and len(us8k) == len(set(us8k)) == 10
    assert not any("_" in label for label in esc50 + us8k)
    # Class indices of the five demo WAVs (file names end in the ESC-50 target).
    assert (esc50[5], esc50[19], esc50[24], esc50[37], esc50[43]) == (
        "cat",
        "thunderstorm",
        "coughing",
        "clock alarm",
        "car horn",
    )
    assert esc50[0] == "dog" and esc50[-1] == "hand saw" and us8k[3] == "dog bark" and us8k[-1] == "street music"


def test_label_specs(tmp_path):
    assert audio_pipeline.parse_labels("US8K")[1][0] == "air conditioner"
    assert audio_pipeline.parse_labels(" a dog , rain,, ") == ("list", ["a dog", "rain"])
    file = tmp_path / "labels.txt"
    file.write_text("# my labels\nbell\n\nwhistle\n", encoding="utf-8")
    assert audio_pipeline.parse_labels(str(file)) == (str(file), ["bell", "whistle"])
    with pytest.raises(BadInputError, match="no such labels file"):
        audio_pipeline.parse_labels(str(tmp_path / "nope.txt"))
    with pytest.raises(BadInputError, match="duplicate labels: dog"):
        audio_pipeline.parse_labels("dog,cat,dog")
    with pytest.raises(BadInputError, match="exactly one"):
        audio_pipeline.check_template("a sound")


def test_zero_shot_scores_follow_the_official_protocol():
    rng = np.random.default_rng(3)
    audio, text = rng.normal(size=(4, 16)), rng.normal(size=(6, 16))

    def official(log_scale: float, multilabel: bool) -> np.ndarray:
        scale = min(max(math.exp(log_scale), 1.0), 100.0)
        a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
        t = text / np.linalg.norm(text, axis=1, keepdims=True)
        logits = scale * a @ t.T
        if multilabel:
            return 1 / (1 + np.exp(-(logits / scale - 0.5)))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    for log_scale in (math.log(50.0), math.log(1000.0), -1.0):
        for multilabel in (False, True):
            ours = audio_pipeline.zero_shot_scores(
                torch.from_numpy(audio), torch.from_numpy(text), torch.tensor(log_scale), multilabel
            )
            np.testing.assert_allclose(ours.numpy(), official(log_scale, multilabel), rtol=1e-5, atol=1e-6)
    single = audio_pipeline.zero_shot_scores(torch.from_numpy(audio), torch.from_numpy(text), torch.tensor(4.6))
    np.testing.assert_allclose(single.sum(dim=1).numpy(), 1.0, rtol=1e-6)
    # Multi-label probabilities are independent: dropping labels leaves the others unchanged.
    full = audio_pipeline.zero_shot_scores(torch.from_numpy(audio), torch.from_numpy(text), torch.tensor(4.6), True)
    part = audio_pipeline.zero_shot_scores(torch.from_numpy(audio), torch.from_numpy(text[:2]), torch.tensor(4.6), True)
    torch.testing.assert_close(part, full[:, :2])


def test_pipeline_scores_equal_the_protocol_computed_by_hand(model, audioclip_file, tmp_path):
    path = tmp_path / "noise.wav"
    write_noise(path, 1.6, 22050, amplitude=0.3, subtype="PCM_16")
    labels = ["dog", "rain", "siren"]
    report = audio_pipeline.run(
        [path], labels=",".join(labels), checkpoint=str(audioclip_file), top_k=3, window=1.0, device="cpu"
    )
    (row,) = report.rows()
    assert row["status"] == "ok" and row["duration_s"] == pytest.approx(1.6, abs=1e-3) and row["silent"] is False
    windows, starts = audio_pipeline.split_windows(audio_pipeline.load_waveform(path), SR)
    assert [w["start_s"] for w in row["windows"]] == [round(s / SR, 4) for s in starts] == [0.0, 0.6]
    assert [w["end_s"] for w in row["windows"]] == [1.0, 1.6]
    with torch.no_grad():
        features = model.encode_audio(torch.from_numpy(windows))
        text = model.encode_text(labels)
    normalised = features / features.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    clip_level = normalised.mean(0) / normalised.mean(0).norm()
    expected = torch.softmax(100.0 * clip_level @ text.T, dim=0)  # the fixture's logit_scale_at clamps to 100
    got = {entry["label"]: entry["score"] for entry in row["tags"]}
    for label, probability in zip(labels, expected.tolist(), strict=True):
        assert got[label] == pytest.approx(probability, abs=2e-5)
    assert [entry["score"] for entry in row["tags"]] == sorted(got.values(), reverse=True)
    second = {entry["label"]: entry["score"] for entry in row["windows"][1]["tags"]}
    assert second["rain"] == pytest.approx(torch.softmax(100.0 * normalised[1] @ text.T, 0)[1].item(), abs=2e-5)


# ---------------------------------------------------------------- the command


def test_cli_json_tags_many_files_and_reports_bad_ones(audioclip_file, tmp_path):
    tone, short, silent, empty = (tmp_path / name for name in ("tone.wav", "short.flac", "silent.wav", "empty.wav"))
    write_tone(tone, 440.0, 1.2, 48000, channels=2)
    write_noise(short, 0.4, 16000)
    sf.write(silent, np.zeros(4410, np.int16), SR, subtype="PCM_16")
    sf.write(empty, np.zeros(0, np.int16), SR, subtype="PCM_16")
    result = run_cli(
        str(tone), str(empty), str(short), str(silent), "--checkpoint", str(audioclip_file), "--device", "cpu",
        "--json", "--labels", "us8k", "--top-k", "10", "--multilabel", "--window", "1", "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == "us8k" and report["num_labels"] == 10 and report["multilabel"] is True
    assert report["command"] == "audio-tag" and report["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    rows = json_rows(result.stdout)
    assert [row["input"] for row in rows] == [str(tone), str(empty), str(short), str(silent)]
    assert [row["status"] for row in rows] == ["ok", "failed", "ok", "ok"]
    assert "contains no audio samples" in rows[1]["error"] and f"error: {empty}" in result.stderr
    assert [len(row["windows"]) for row in (rows[0], rows[2], rows[3])] == [2, 1, 1]
    assert rows[3]["silent"] is True and rows[0]["silent"] is False and "silent" in result.stderr
    for row in (rows[0], rows[2], rows[3]):
        scores = [entry["score"] for entry in row["tags"]]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert sum(entry["score"] for entry in rows[0]["tags"]) != pytest.approx(1.0, abs=1e-3)  # not a softmax
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 4 inputs failed"


def test_cli_single_bad_file_and_bad_options_exit_2(audioclip_file, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    good = tmp_path / "good.wav"
    write_tone(good, 300.0, 0.5, SR)
    ckpt = ["--checkpoint", str(audioclip_file), "--device", "cpu"]
    for args, message in (
        ([str(empty), *ckpt], "empty file"),
        ([str(tmp_path / "missing.wav"), *ckpt], "no such file"),
        ([str(good), "--labels", "labels.txt", *ckpt], "no such labels file"),
        ([str(good), "--labels", "dog", *ckpt], "at least two labels"),
        ([str(good), "--template", "a sound", *ckpt], "exactly one {}"),
        ([str(good), "--window", "0", *ckpt], "--window 0.0"),
        ([str(good), "--images", str(good), *ckpt], "--images needs a folder"),
        ([str(good), "--checkpoint", str(good), "--device", "cpu"], "not a PyTorch checkpoint"),
    ):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, result.stderr)


def test_bad_arguments_name_the_flag_on_the_command_line_and_the_parameter_in_python(audioclip_file, tmp_path):
    good = tmp_path / "good.wav"
    write_tone(good, 300.0, 0.5, SR)
    ckpt = ["--checkpoint", str(audioclip_file), "--device", "cpu"]
    for args, line in (
        (["--window", "0"], "--window 0.0: must be at least 0.1 s"),
        (["--labels", "dog"], "--labels needs at least two labels for a softmax (or use --multilabel)"),
        (["--template", "a sound"], "--template 'a sound': needs exactly one {} for the label"),
        (["--images", str(good)], f"--images needs a folder of images, not {good}"),
        (["--labels", "dog," + "bark " * 80], "--labels has a prompt too long for CLIP's 77-token context: 'bark"),
    ):
        result = run_cli(str(good), *args, *ckpt)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(f"error: {line}") and result.stderr.count("\n") == 1, result.stderr
    with pytest.raises(BadInputError, match="^window: 0.05: must be at least 0.1 s$"):
        audio_pipeline.run([good], window=0.05, checkpoint=str(audioclip_file), device="cpu")
    with pytest.raises(BadInputError, match="^top_k: 0: must be at least 1$"):
        audio_pipeline.run([good], top_k=0, checkpoint=str(audioclip_file), device="cpu")


def test_a_caption_too_long_for_clip_names_the_texts_file(audioclip_file, tmp_path):
    good, captions = tmp_path / "good.wav", tmp_path / "captions.txt"
    write_tone(good, 300.0, 0.5, SR)
    captions.write_text("a dog barking\n" + "rain " * 80 + "\n", encoding="utf-8")
    result = run_cli(str(good), "--texts", str(captions), "--checkpoint", str(audioclip_file), "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {captions}: prompt too long for CLIP's 77-token context: 'rain rain")


def test_the_job_pickles_without_its_model_for_other_workers(audioclip_file, tmp_path):
    import pickle

    sound = tmp_path / "sound.wav"
    write_noise(sound, 0.4, SR, amplitude=0.2)
    targets = audio_pipeline.Targets(["bell", "rain"], torch.eye(2, 1024), False, 2, [], None, [], None)
    job = audio_pipeline.AudioTagJob(Path(audioclip_file), targets, SR // 2, device="cpu")
    job.setup()
    copy = pickle.loads(pickle.dumps(job))
    assert not hasattr(copy, "_model") and copy.window_samples == SR // 2
    torch.testing.assert_close(copy.targets.label_features, targets.label_features)
    copy.setup()
    [outcome] = copy.compute_batch([(sound, copy.read(sound))])
    assert outcome == job.compute_batch([(sound, job.read(sound))])[0]
    assert {entry["label"] for entry in outcome["tags"]} == {"bell", "rain"} and len(outcome["windows"]) == 1


def test_cli_headerless_raw_audio_fails_alone_with_one_line(audioclip_file, tmp_path):
    raw, good = tmp_path / "speech.raw", tmp_path / "good.wav"
    raw.write_bytes(np.zeros(4410, "<i2").tobytes())
    write_tone(good, 300.0, 0.5, SR)
    ckpt = ["--checkpoint", str(audioclip_file), "--device", "cpu"]
    alone = run_cli(str(raw), *ckpt)
    assert alone.exit_code == 2, alone.output
    advice = "headerless raw audio: convert it to WAV or FLAC first"
    assert alone.stderr.strip().splitlines()[-1] == f"error: {raw}: {advice}"
    batch = run_cli(str(raw), str(good), "--json", *ckpt)
    assert batch.exit_code == 4, batch.output
    assert [row["status"] for row in json_rows(batch.stdout)] == ["failed", "ok"]


def test_cli_ranks_images_and_texts_with_cached_image_embeddings(audioclip_file, tmp_path, isolated_home, monkeypatch):
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), np.full((40, 60, 3), 70 * index, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog barking\nrain on a tin roof\nan engine idling\n", encoding="utf-8")
    sound = tmp_path / "sound.wav"
    write_noise(sound, 0.4, SR, amplitude=0.2)
    args = [str(sound), "--checkpoint", str(audioclip_file), "--device", "cpu", "--json", "--top-k", "2"]
    args += ["--window", "0.4"]
    result = run_cli(*args, "--images", str(folder), "--texts", str(captions))
    assert result.exit_code == 4, result.output  # the broken image is reported
    report = json.loads(result.stdout)
    assert report["image_failures"][0]["input"] == str(folder / "broken.jpg")
    (row,) = json_rows(result.stdout)
    assert [entry["score"] for entry in row["images"]] == sorted((e["score"] for e in row["images"]), reverse=True)
    assert len(row["images"]) == 2 and len(row["texts"]) == 2
    scale_ai = 54.0
    for entry in row["images"]:
        assert entry["score"] == pytest.approx(scale_ai * entry["cosine"], abs=1e-3)
    for entry in row["texts"]:
        assert entry["score"] == pytest.approx(100.0 * entry["cosine"], abs=1e-3)
    caches = list((isolated_home / ".cache" / "clipcli" / "audio-tag").glob("images-*.npz"))
    assert len(caches) == 1
    with np.load(caches[0]) as data:
        assert sorted(data["paths"].tolist()) == sorted(str((folder / f"{i}.png").resolve()) for i in range(3))
        assert data["features"].shape == (3, 1024)

    def no_images(*args, **kwargs):
        raise AssertionError("image embeddings should come from the cache")

    (folder / "broken.jpg").unlink()
    monkeypatch.setattr(AudioCLIP, "encode_image", no_images)
    again = run_cli(*args, "--images", str(folder))
    assert again.exit_code == 0, again.output
    assert json_rows(again.stdout)[0]["images"] == row["images"]


def test_cli_table_output(audioclip_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tone(tmp_path / "bark.wav", 800.0, 0.3, 22050)
    args = ["--checkpoint", str(audioclip_file), "--device", "cpu", "--labels", "bell,whistle", "--window", "0.3"]
    result = run_cli("bark.wav", *args)
    assert result.exit_code == 0, result.output
    assert "AudioCLIP tags (list, softmax)" in result.stdout and "bark.wav" in result.stdout
    assert "bell" in result.stdout and "whistle" in result.stdout


@pytest.mark.skipif(
    not os.environ.get("CLIPCLI_AUDIOCLIP_REPO"),
    reason="set CLIPCLI_AUDIOCLIP_REPO to an AudioCLIP clone with assets/AudioCLIP-Full-Training.pt (real weights)",
)
def test_real_weights_tag_the_demo_wavs_with_their_esc50_labels():
    """The five demo WAVs end in their ESC-50 class index (e.g. cat_3-95694-A-5.wav)."""
    repo = Path(os.environ["CLIPCLI_AUDIOCLIP_REPO"])
    wavs = sorted((repo / "demo" / "audio").glob("*.wav"))
    report = audio_pipeline.run(wavs, checkpoint=str(repo / "assets" / "AudioCLIP-Full-Training.pt"), device="auto")
    esc50 = audio_pipeline.builtin_labels("esc50")
    for wav, row in zip(wavs, report.rows(), strict=True):
        expected = esc50[int(wav.stem.rsplit("-", 1)[1])]
        assert expected in [entry["label"] for entry in row["tags"]], (wav.name, row["tags"])
