"""clipcli.media.audio: decoding, mono mixing, resampling and the bad-file errors."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import soundfile as sf
from makers.audio import (
    tone,
    write_compressed_tone,
    write_noise,
    write_tone,
    write_video_without_audio,
    write_wave,
)

from clipcli.errors import EXIT_BAD_INPUT, BadInputError
from clipcli.media import audio
from clipcli.media.audio import AUDIO_EXTENSIONS, load_audio, resample


def dominant_frequency(wave: np.ndarray, sr: int) -> float:
    """Frequency of the largest Hann-windowed FFT bin."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * sr / len(wave))


def assert_bad_input(path, *words: str) -> BadInputError:
    """load_audio raises a one-line BadInputError naming the file and the problem."""
    with pytest.raises(BadInputError) as caught:
        load_audio(path, 44100)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for word in words:
        assert word in message
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


def test_stereo_48k_flac_becomes_mono_44k_with_same_pitch(tmp_path):
    path = tmp_path / "tone.flac"
    write_tone(path, 1000.0, 0.5, 48000, channels=2)
    wave = load_audio(path, 44100)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - round(0.5 * 44100)) <= 1
    assert dominant_frequency(wave, 44100) == pytest.approx(1000.0, rel=0.01)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.02)


def test_mono_is_the_mean_of_the_channels(tmp_path):
    path = tmp_path / "two.wav"
    left = tone(440.0, 0.25, 44100, amplitude=0.4)
    right = np.random.default_rng(1).uniform(-0.4, 0.4, len(left)).astype(np.float32)
    written = write_wave(path, np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    wave = load_audio(path, 44100)
    np.testing.assert_allclose(wave, written.mean(axis=1), atol=1e-7)


def test_int16_full_scale_square_reads_to_plus_minus_one(tmp_path):
    path = tmp_path / "square.wav"
    square = np.where(np.arange(4410) % 100 < 50, 32767, -32768).astype(np.int16)
    sf.write(path, square, 44100, subtype="PCM_16")
    wave = load_audio(path, 44100)
    np.testing.assert_array_equal(wave, square / np.float32(32768))
    assert wave.min() == -1.0 and wave.max() == pytest.approx(1.0, abs=1e-4)


def test_pyav_fallback_matches_soundfile_on_lossless_audio(tmp_path, monkeypatch):
    path = tmp_path / "noise.wav"
    write_noise(path, 0.2, 22050, channels=2, subtype="PCM_16")
    expected = load_audio(path, 16000)

    def refuse(handle):
        raise sf.LibsndfileError(0, "refused by test")

    monkeypatch.setattr(audio, "_decode_soundfile", refuse)
    np.testing.assert_allclose(load_audio(path, 16000), expected, atol=1e-6)


@pytest.mark.parametrize("suffix", [".mp3", ".m4a", ".aac"])
def test_compressed_audio_keeps_pitch_and_length(tmp_path, suffix):
    path = tmp_path / f"tone{suffix}"
    write_compressed_tone(path, 1000.0, 0.5, 44100, channels=2)
    wave = load_audio(path, 44100)
    # encoders add priming and padding (up to about two frames of 1152 samples)
    assert abs(len(wave) - 22050) <= 2400
    assert dominant_frequency(wave, 44100) == pytest.approx(1000.0, rel=0.01)
    assert np.abs(wave).max() <= 1.0


def test_m4a_is_read_by_pyav(tmp_path, monkeypatch):
    path = tmp_path / "tone.m4a"
    write_compressed_tone(path, 500.0, 0.3, 44100)
    calls = []
    original = audio._decode_pyav
    monkeypatch.setattr(audio, "_decode_pyav", lambda *args: calls.append(1) or original(*args))
    assert dominant_frequency(load_audio(path, 22050), 22050) == pytest.approx(500.0, rel=0.01)
    assert calls == [1]


def test_resample_reproduces_a_tone_at_the_new_rate():
    source = tone(1000.0, 0.5, 48000)
    resampled = resample(source, 48000, 44100)
    expected = tone(1000.0, 0.5, 44100)
    assert resampled.dtype == np.float32 and len(resampled) == len(expected)
    inner = slice(500, -500)  # the FIR filter rings at the edges
    np.testing.assert_allclose(resampled[inner], expected[inner], atol=2e-3)


def test_resample_same_rate_is_identity_and_rejects_bad_rates():
    wave = np.linspace(-1, 1, 100, dtype=np.float32)
    np.testing.assert_array_equal(resample(wave, 16000, 16000), wave)
    with pytest.raises(ValueError, match="positive integer"):
        resample(wave, 16000, 0)
    with pytest.raises(ValueError, match="positive integer"):
        resample(wave, 44100.5, 16000)


def test_non_utf8_file_name(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9.wav")
    write_tone(path, 440.0, 0.2, 16000)
    assert len(load_audio(path, 16000)) == 3200
    m4a = tmp_path / os.fsdecode(b"caf\xe9.m4a")
    write_compressed_tone(m4a, 440.0, 0.2, 16000)
    assert dominant_frequency(load_audio(m4a, 16000), 16000) == pytest.approx(440.0, rel=0.02)


def test_extensions_are_lowercase_suffixes():
    assert {".wav", ".flac", ".mp3", ".m4a", ".ogg"} <= set(AUDIO_EXTENSIONS)
    assert all(ext.startswith(".") and ext == ext.lower() for ext in AUDIO_EXTENSIONS)


def test_missing_file(tmp_path):
    assert_bad_input(tmp_path / "absent.wav", "no such file")


def test_directory(tmp_path):
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert_bad_input(folder, "not a file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    assert_bad_input(path, "empty file")


def test_text_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 20)
    assert_bad_input(path, "not a readable audio file")


def test_wav_cut_inside_the_header(tmp_path):
    path = tmp_path / "cut.wav"
    write_tone(path, 440.0, 0.1, 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:20])
    assert_bad_input(path, "truncated or corrupt")


def test_wav_with_cut_data_chunk_returns_what_is_there(tmp_path):
    path = tmp_path / "cut.wav"
    written = write_tone(path, 440.0, 1.0, 16000, subtype="PCM_16")
    header = 44  # canonical PCM wav header, as libsndfile writes it
    path.write_bytes(path.read_bytes()[: header + 2 * 1000])
    with pytest.warns(audio.TruncatedAudioWarning, match="2000 of the 32000 audio bytes"):
        wave = load_audio(path, 16000)
    np.testing.assert_allclose(wave, written[:1000, 0], atol=1 / 32768)


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video_without_audio(path)
    assert_bad_input(path, "no audio stream")


def test_zero_samples(tmp_path):
    path = tmp_path / "nothing.wav"
    write_wave(path, np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    assert path.stat().st_size > 0
    assert_bad_input(path, "no audio samples")


def test_non_finite_samples(tmp_path):
    path = tmp_path / "nan.wav"
    write_wave(path, np.array([0.0, np.nan, 0.5], np.float32), 16000, subtype="FLOAT")
    assert_bad_input(path, "non-finite")


@pytest.mark.parametrize("suffix", [".raw", ".pcm"])
def test_headerless_raw_audio_is_refused_with_advice(tmp_path, suffix):
    # soundfile reads ".raw" as headerless PCM and asks for a sample rate (a TypeError) instead.
    path = tmp_path / f"speech{suffix}"
    path.write_bytes((tone(440.0, 0.1, 16000) * 32767).astype("<i2").tobytes())
    assert_bad_input(path, "headerless raw audio", "WAV")


def test_chunk_size_past_the_end_of_the_file_is_bad_input(tmp_path):
    # A CAF 'free' chunk claiming exabytes: libsndfile refuses, and FFmpeg's seek past it fails in Python's file.
    path = tmp_path / "huge.caf"
    write_tone(path, 440.0, 0.1, 16000)
    data = bytearray(path.read_bytes())
    data[data.index(b"free") + 5] = 0x42
    path.write_bytes(bytes(data))
    assert_bad_input(path, "not a readable audio file")


def test_unknown_audio_codec_is_named(tmp_path):
    path = tmp_path / "odd.wav"
    write_tone(path, 440.0, 0.1, 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[20:22] = (0x1234).to_bytes(2, "little")  # the 'fmt ' chunk's format tag
    path.write_bytes(bytes(data))
    assert_bad_input(path, "no decoder")


def test_metadata_that_is_not_utf8_does_not_stop_decoding(tmp_path):
    path = tmp_path / "latin1.m4a"
    write_compressed_tone(path, 440.0, 1.0, 44100)
    data = path.read_bytes()
    assert b"SoundHandler" in data
    path.write_bytes(data.replace(b"SoundHandler", b"SoundHandl\xe9r"))
    wave = load_audio(path, 44100)
    assert abs(len(wave) - 44100) < 2048
    assert dominant_frequency(wave, 44100) == pytest.approx(440.0, abs=5)


def test_a_wav_cut_short_is_read_with_a_warning_naming_what_is_missing(tmp_path):
    whole = tmp_path / "whole.wav"
    write_tone(whole, 440, 1.0, 16000)  # 16-bit mono: 32,000 data bytes after a 44-byte header
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:3000])
    with pytest.warns(audio.TruncatedAudioWarning) as caught:
        wave = load_audio(cut, 16000)
    assert str(caught[0].message) == (
        f"{cut}: truncated WAV: 2956 of the 32000 audio bytes its header declares; using what is there"
    )
    assert len(wave) == 2956 // 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(whole, 16000)) == 16000


def test_a_streamed_wav_with_an_unknown_data_size_is_not_called_truncated(tmp_path):
    path = tmp_path / "stream.wav"
    write_tone(path, 440, 0.1, 16000)
    data = bytearray(path.read_bytes())
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # the data chunk's size, as live writers leave it
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, 16000)
