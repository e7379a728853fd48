"""--decode auto|cpu|gpu: the decoder each mode picks, the one-line errors, the per-file fallback to the CPU readers.

No GPU decoder can run here, so a fake one (the CPU's own JPEG decode, refusing
some files) is registered as if the device were CUDA: whatever it refuses must
come out exactly as the CPU run's, failures included.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from makers.video import index_frames, write_video
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import ParameterError
from clipcli.media import decoders
from clipcli.media.decoders import CPU_DECODERS, IMAGE, VIDEO, Decoder, select_decoder
from clipcli.media.images import load_image
from clipcli.media.video import sample_frames
from clipcli.media.video_pyav import read_pyav
from clipcli.pipelines import retrieve
from clipcli.store.index import VideoIndex

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


class FakeGpuVideo:
    """A "GPU" video decoder: PyAV's frames for the videos it accepts; records the paths it was given."""

    def __init__(self, refused: set[Path] = frozenset()):
        self.refused, self.seen = refused, []

    def __call__(self, info, wanted, device: str):
        self.seen.append(info.path)
        if info.path in self.refused:
            raise RuntimeError("unsupported codec")
        return read_pyav(info, wanted)


@pytest.fixture
def clips(tmp_path) -> Path:
    """Three tiny videos of distinct brightness, an MJPEG one among them, and a corrupt file."""
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "c0.mp4", index_frames(8) // 2)
    write_video(folder / "c1.avi", index_frames(8) // 3, codec="mjpeg")
    write_video(folder / "c2.mp4", index_frames(8) // 4)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    return folder


def test_videos_the_gpu_decoder_refuses_fall_back_to_the_cpu_decoders_one_by_one(clips):
    fake = FakeGpuVideo(refused={clips / "c1.avi"})
    decoder = Decoder("fake", VIDEO, fake)
    for name in ("c0.mp4", "c1.avi", "c2.mp4"):
        on_gpu, on_cpu = sample_frames(clips / name, 5, decoder=decoder), sample_frames(clips / name, 5)
        np.testing.assert_array_equal(on_gpu.frames, on_cpu.frames)
        np.testing.assert_array_equal(on_gpu.indices, on_cpu.indices)
    assert fake.seen == [clips / name for name in ("c0.mp4", "c1.avi", "c2.mp4")]


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
        ["sketch", "{image}", "--out", "{out}"],
        ["classify-action", "{video}"],
        ["retrieve", "{folder}", "a cat"],
        ["retrieve", "{folder}", "--update-only"],
    ],
)
def test_decode_gpu_without_cuda_exits_2_with_one_line_before_the_model_loads(command, tmp_path):
    write_image(tmp_path / "a.jpg", draw_shapes_image((40, 40), seed=1))
    write_video(tmp_path / "clip.mp4", 4)
    missing_model = tmp_path / "no-such-model.pt"  # loading it first would fail with another message
    names = {"image": tmp_path / "a.jpg", "video": tmp_path / "clip.mp4", "folder": tmp_path, "out": tmp_path / "out"}
    args = [part.format(**names) for part in command]
    result = runner.invoke(app, [*args, "--model", str(missing_model), "--device", "cpu", "--decode", "gpu"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --decode gpu needs a CUDA device (this run uses cpu)"
    assert not (tmp_path / "out").exists()


def index_state(folder: Path) -> tuple[dict, np.ndarray]:
    with VideoIndex(retrieve.default_index_dir(folder)) as index:
        return index.identity, index.matrix([folder]).embeddings


def test_an_index_records_a_gpu_decoder_and_is_re_embedded_when_the_decoder_changes(
    clips, tmp_path, monkeypatch, tiny_vit_path
):
    monkeypatch.setenv("CLIPCLI_INDEX_HOME", str(tmp_path / "indexes"))
    update = ["retrieve", clips, "--update-only", "--model", tiny_vit_path, "--device", "cpu", "--json"]
    cpu = runner.invoke(app, [*map(str, update), "--decode", "cpu"])
    cpu_identity, cpu_embeddings = index_state(clips)
    assert cpu.exit_code == 4 and "decoder" not in cpu_identity

    fake = FakeGpuVideo(refused={clips / "c1.avi"})
    register(monkeypatch, VIDEO, Decoder("fake", VIDEO, fake))
    gpu = runner.invoke(app, [*map(str, update), "--decode", "gpu"])
    gpu_identity, gpu_embeddings = index_state(clips)
    assert gpu.exit_code == 4, gpu.output
    assert json.loads(gpu.stdout)["indexes"][0] | {"index": None} == {
        "index": None, "videos": 4, "embedded": 3, "unchanged": 0, "removed": 0, "failed": 1, "known_failed": 0,
        "reset": True,
    }  # fmt: skip
    assert gpu_identity == {**cpu_identity, "decoder": "fake"}
    np.testing.assert_array_equal(gpu_embeddings, cpu_embeddings)
    assert set(fake.seen) == {clips / name for name in ("c0.mp4", "c1.avi", "c2.mp4")}
    assert [Path(row["input"]).name for row in json_rows(gpu.stdout) if row["status"] == "failed"] == ["broken.mp4"]

    search = ["retrieve", clips, "bright", "--no-update", "--model", tiny_vit_path, "--device", "cpu", "--json"]
    found = runner.invoke(app, [*map(str, search), "--decode", "cpu"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["hits"]) == 3

    back = runner.invoke(app, [*map(str, update), "--decode", "cpu"])
    assert json.loads(back.stdout)["indexes"][0]["reset"] is True
    assert index_state(clips)[0] == cpu_identity


def test_classify_action_with_a_gpu_decoder_failing_on_some_videos_gives_the_cpu_runs_results(
    clips, monkeypatch, tiny_vit_path
):
    args = ["classify-action", *sorted(clips.iterdir()), "--labels", "run,jump,swim", "--model", tiny_vit_path]
    cpu = invoke(*args, "--decode", "cpu")
    fake = FakeGpuVideo(refused={clips / "c1.avi"})
    register(monkeypatch, VIDEO, Decoder("fake", VIDEO, fake))
    gpu = invoke(*args, "--decode", "gpu")
    assert cpu.exit_code == gpu.exit_code == 4, gpu.output
    assert json_rows(gpu.stdout) == json_rows(cpu.stdout)
    assert set(fake.seen) == {clips / name for name in ("c0.mp4", "c1.avi", "c2.mp4")}


def test_sketch_targets_are_read_with_the_jobs_decoder_and_fall_back_per_file(pictures, tmp_path):
    from clipcli.pipelines.sketch import SketchJob
    from clipcli.pipelines.sketch_files import read_target

    fake = FakeGpuJpeg(refused={(pictures / "c.jpg").read_bytes()})
    job = SketchJob(out=tmp_path / "out", decoder=Decoder("fake", IMAGE, fake))
    for name in ("a.jpg", "b.png", "c.jpg"):
        torch.testing.assert_close(job.read(pictures / name), read_target(pictures / name), rtol=0, atol=0)
    assert fake.seen == [(pictures / name).read_bytes() for name in ("a.jpg", "b.png", "c.jpg")]
