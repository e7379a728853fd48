"""--decode auto|cpu|gpu: the decoder each mode picks, the one-line errors, the per-file fallback to the CPU readers.

No GPU decoder can run here, so a fake one (the CPU's own JPEG decode, refusing
some files) is registered as if the device were CUDA: whatever it refuses must
come out exactly as the CPU run's, failures included.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import ParameterError
from clipcli.media import decoders
from clipcli.media.decoders import CPU_DECODERS, IMAGE, VIDEO, Decoder, select_decoder
from clipcli.media.images import load_image

runner = CliRunner()


class FakeGpuJpeg:
    """A "GPU" JPEG decoder: OpenCV's decode of the JPEGs it accepts, in file order (no EXIF); records its inputs."""

    def __init__(self, refused: set[bytes] = frozenset()):
        self.refused, self.seen = refused, []

    def __call__(self, data: bytes, device: str) -> np.ndarray:
        self.seen.append(data)
        if not data.startswith(b"\xff\xd8") or data in self.refused:
            raise RuntimeError("unsupported")
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if pixels is None:
            raise RuntimeError("decode failed")
        return pixels[..., ::-1]


def register(monkeypatch, media: str, decoder: Decoder, cuda: bool = True) -> None:
    """Put `decoder` alone in the registry for `media`; with `cuda`, every device counts as CUDA."""
    monkeypatch.setitem(decoders.GPU_DECODERS, media, [decoder])
    if cuda:
        monkeypatch.setattr(decoders, "resolve_device", lambda spec, announce: torch.device("cuda"))


# ---------------------------------------------------------------- selection


def test_cpu_mode_is_the_cpu_reader_even_with_a_gpu_decoder_registered(monkeypatch):
    register(monkeypatch, IMAGE, Decoder("fake", IMAGE, FakeGpuJpeg()))
    assert select_decoder("cpu", "cuda", IMAGE) is CPU_DECODERS[IMAGE]


def test_auto_on_a_cpu_device_is_the_cpu_reader_without_a_word(monkeypatch):
    register(monkeypatch, IMAGE, Decoder("fake", IMAGE, FakeGpuJpeg()), cuda=False)
    assert select_decoder("auto", "cpu", IMAGE) is CPU_DECODERS[IMAGE]


def test_auto_on_cuda_picks_the_first_available_gpu_decoder_on_that_device(monkeypatch):
    fake = Decoder("fake", VIDEO, FakeGpuJpeg())
    register(monkeypatch, VIDEO, fake)
    chosen = select_decoder("auto", "cuda", VIDEO)
    assert (chosen.name, chosen.decode, chosen.device) == ("fake", fake.decode, "cuda")


def test_auto_on_cuda_without_a_runnable_gpu_decoder_is_the_cpu_reader(monkeypatch):
    register(monkeypatch, IMAGE, Decoder("fake", IMAGE, FakeGpuJpeg(), available=lambda: False, needs="libfake"))
    assert select_decoder("auto", "cuda", IMAGE) is CPU_DECODERS[IMAGE]


def test_gpu_on_a_cpu_device_names_the_missing_cuda_device():
    with pytest.raises(ParameterError) as raised:
        select_decoder("gpu", "cpu", VIDEO)
    assert raised.value.for_flag() == "--decode gpu needs a CUDA device (this run uses cpu)"


def test_gpu_on_cuda_names_what_the_registered_decoders_need(monkeypatch):
    needs = "libfake with CUDA: pip install 'clipcli[gpu-decode]'"
    register(monkeypatch, VIDEO, Decoder("fake", VIDEO, FakeGpuJpeg(), available=lambda: False, needs=needs))
    with pytest.raises(ParameterError) as raised:
        select_decoder("gpu", "cuda", VIDEO)
    assert raised.value.for_flag() == f"--decode gpu needs {needs}"


def test_gpu_on_cuda_with_an_empty_registry_says_there_is_no_gpu_decoder(monkeypatch):
    monkeypatch.setattr(decoders, "resolve_device", lambda spec, announce: torch.device("cuda"))
    monkeypatch.setitem(decoders.GPU_DECODERS, IMAGE, [])
    with pytest.raises(ParameterError, match="gpu needs a GPU image decoder, and this clipcli has none yet"):
        select_decoder("gpu", "cuda", IMAGE)


def test_an_unknown_mode_is_a_parameter_error():
    with pytest.raises(ParameterError, match="decode: must be one of auto, cpu, gpu, not 'fast'"):
        select_decoder("fast", "cpu")


# ---------------------------------------------------------------- the image reader


@pytest.fixture
def pictures(tmp_path) -> Path:
    """Two JPEGs, a PNG, a truncated JPEG (its header intact) and a file that is no image."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    write_image(folder / "a.jpg", draw_shapes_image((120, 160), seed=1))
    write_image(folder / "b.png", draw_shapes_image((90, 100), seed=2))
    write_image(folder / "c.jpg", draw_shapes_image((100, 130), seed=3))
    whole = (folder / "a.jpg").read_bytes()
    (folder / "d.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "e.jpg").write_bytes(b"not an image")
    return folder


def test_load_image_uses_the_gpu_decoders_pixels_then_applies_exif(tmp_path):
    from makers.images import write_exif_rotated_jpeg

    write_exif_rotated_jpeg(tmp_path / "turned.jpg", draw_shapes_image((40, 60), seed=4), orientation=6)
    inverted = Decoder("inverted", IMAGE, lambda data, device: 255 - FakeGpuJpeg()(data, device))
    on_gpu = load_image(tmp_path / "turned.jpg", decoder=inverted)
    np.testing.assert_array_equal(on_gpu, 255 - load_image(tmp_path / "turned.jpg"))
    assert on_gpu.shape == (60, 40, 3)


def test_files_the_gpu_decoder_refuses_fall_back_to_the_cpu_reader_one_by_one(pictures):
    fake = FakeGpuJpeg(refused={(pictures / "c.jpg").read_bytes()})
    decoder = Decoder("fake", IMAGE, fake)
    for name in ("a.jpg", "b.png", "c.jpg"):
        np.testing.assert_array_equal(load_image(pictures / name, decoder=decoder), load_image(pictures / name))
    assert fake.seen == [(pictures / name).read_bytes() for name in ("a.jpg", "b.png", "c.jpg")]


# ---------------------------------------------------------------- the commands


def invoke(*args) -> object:
    return runner.invoke(app, [*map(str, args), "--device", "cpu", "--quiet", "--json"])


def image_command(command: str, pictures: Path, out: Path, rn: str, vit: str) -> list:
    if command == "vqa":
        return ["vqa", pictures, "is it red", "--answers", "yes,no", "--model", vit]
    size = ["--size", "native"] if command == "depth" else []
    return [command, pictures, "--model", rn, "--out", out, *size]


def comparable(stdout: str, out: Path) -> list[dict]:
    """The report's rows without timings, output paths relative to the run's folder."""
    text = stdout.replace(str(out), "OUT")
    return [{k: v for k, v in row.items() if k != "seconds"} for row in json_rows(text)]


def outputs(out: Path) -> dict[str, bytes]:
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("command", ["features", "depth", "vqa"])
def test_a_gpu_decoder_failing_on_some_files_gives_the_cpu_runs_results(
    command, pictures, tmp_path, monkeypatch, tiny_rn_path, tiny_vit_path
):
    cpu_out, gpu_out = tmp_path / "cpu", tmp_path / "gpu"
    cpu = invoke(*image_command(command, pictures, cpu_out, tiny_rn_path, tiny_vit_path), "--decode", "cpu")
    fake = FakeGpuJpeg(refused={(pictures / "c.jpg").read_bytes()})
    register(monkeypatch, IMAGE, Decoder("fake", IMAGE, fake))
    gpu = invoke(*image_command(command, pictures, gpu_out, tiny_rn_path, tiny_vit_path), "--decode", "gpu")
    assert cpu.exit_code == gpu.exit_code == 4, gpu.output
    assert comparable(gpu.stdout, gpu_out) == comparable(cpu.stdout, cpu_out)
    statuses = {Path(row["input"]).name: row["status"] for row in json_rows(gpu.stdout)}
    assert statuses == {"a.jpg": "ok", "b.png": "ok", "c.jpg": "ok", "d.jpg": "failed", "e.jpg": "failed"}
    assert outputs(gpu_out) == outputs(cpu_out)
    tried = {(pictures / name).read_bytes() for name in ("a.jpg", "b.png", "c.jpg", "d.jpg")}
    assert set(fake.seen) == tried  # e.jpg fails on its header, before any decoder


def test_auto_on_a_cpu_device_never_calls_a_gpu_decoder_and_matches_cpu(pictures, tmp_path, monkeypatch, tiny_rn_path):
    fake = FakeGpuJpeg()
    register(monkeypatch, IMAGE, Decoder("fake", IMAGE, fake), cuda=False)
    auto = invoke("features", pictures, "--model", tiny_rn_path, "--out", tmp_path / "auto", "--decode", "auto")
    cpu = invoke("features", pictures, "--model", tiny_rn_path, "--out", tmp_path / "cpu", "--decode", "cpu")
    assert fake.seen == []
    assert comparable(auto.stdout, tmp_path / "auto") == comparable(cpu.stdout, tmp_path / "cpu")
    assert outputs(tmp_path / "auto") == outputs(tmp_path / "cpu") and len(outputs(tmp_path / "cpu")) == 3


@pytest.mark.parametrize(
    "command",
    [
        ["features", "{image}", "--out", "{out}"],
        ["depth", "{image}", "--out", "{out}"],
        ["vqa", "{image}", "is it red"],
    ],
)
def test_decode_gpu_without_cuda_exits_2_with_one_line_before_the_model_loads(command, tmp_path):
    write_image(tmp_path / "a.jpg", draw_shapes_image((40, 40), seed=1))
    missing_model = tmp_path / "no-such-model.pt"  # loading it first would fail with another message
    args = [part.format(image=tmp_path / "a.jpg", out=tmp_path / "out") for part in command]
    result = runner.invoke(app, [*args, "--model", str(missing_model), "--device", "cpu", "--decode", "gpu"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --decode gpu needs a CUDA device (this run uses cpu)"
    assert not (tmp_path / "out").exists()
