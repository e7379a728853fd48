"""Output files across commands: names, collisions, self-ingestion, `--out`, and user text in tables.

Every command that writes files names them after the input's file name
without its last extension, refuses inputs that would share a name before
doing any work, never reads its own outputs or temp files back in, and says
in one line when `--out` is not a folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from clip.model import CLIP
from makers.images import draw_shapes_image, write_image
from makers.points import cube_points, write_npy, write_xyz
from makers.report import json_rows
from makers.video import write_video
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from clipcli import cli, ui
from clipcli.batch import expand_inputs
from clipcli.cli_support import Common, show
from clipcli.errors import BadInputError
from clipcli.media.images import IMAGE_EXTENSIONS
from clipcli.pipelines import audio, depth, features, retrieve
from clipcli.store.atomic import atomic_path

runner = CliRunner()


@dataclass(frozen=True)
class Command:
    """How to run one file-writing command cheaply, and the files it writes per input ({} = the stem)."""

    name: str
    extensions: tuple[str, str]
    options: str
    outputs: tuple[str, ...]

    def invoke(self, models: dict, inputs, out: Path, *extra):
        options = self.options.format(**models).split()
        args = [self.name, *inputs, *options, "--out", out, "--device", "cpu", "--quiet", *extra]
        return runner.invoke(cli.app, [str(arg) for arg in args])


SKETCH_OPTIONS = "--model {rn} --saliency-model {vit} --iterations 1 --seeds 1 --strokes 2 --augmentations 0"
COMMANDS = [
    Command("depth", (".png", ".jpg"), "--model {rn}", ("{}_depth.npy", "{}_depth.png", "{}_depth_color.png")),
    Command("sketch", (".png", ".jpg"), SKETCH_OPTIONS, ("{}_sketch.json", "{}_sketch.png", "{}_sketch.svg")),
    Command("features", (".png", ".jpg"), "--model {rn}", ("{}.npy",)),
    Command(
        "classify-action",
        (".mp4", ".avi"),
        "--model {vit} --labels a,b --frames 2 --window 1 --plot",
        ("{}_actions.png",),
    ),
    Command(
        "point-classify", (".xyz", ".npy"), "--model {vit} --labels a,b --points 64 --save-views", ("{}_views.png",)
    ),
]
BY_NAME = {command.name: command for command in COMMANDS}


@pytest.fixture
def models(tiny_rn_path, tiny_vit_path) -> dict:
    return {"rn": tiny_rn_path, "vit": tiny_vit_path}


def make_input(path: Path, seed: int = 0) -> Path:
    """A small valid input of the kind the suffix says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".png", ".jpg"):
        write_image(path, draw_shapes_image((64, 96), seed=seed))
    elif path.suffix in (".mp4", ".avi"):
        write_video(path, 20, fps=10)
    elif path.suffix == ".xyz":
        write_xyz(path, cube_points(100, seed))
    else:
        write_npy(path, cube_points(100, seed))
    return path


def leftover_temp_name(folder: Path) -> str:
    """The name of the temp file an atomic write leaves behind when its process is killed."""
    with contextlib.suppress(InterruptedError), atomic_path(folder / "killed.png") as tmp:
        raise InterruptedError
    return tmp.name


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------- names keep every dot (item 10)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_dotted_names_keep_their_dots_so_versions_do_not_collide(command, models, tmp_path):
    ext = command.extensions[0]
    inputs = [make_input(tmp_path / f"photo.v{n}{ext}", seed=n) for n in (1, 2)]
    out = tmp_path / "out"
    result = command.invoke(models, inputs, out)
    assert result.exit_code == 0, result.output
    expected = {template.format(stem) for stem in ("photo.v1", "photo.v2") for template in command.outputs}
    assert {p.name for p in out.iterdir()} >= expected


# ---------------------------------------------------------------- collisions refused up front (item 11)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize(
    "names",
    [("a/cat{0}", "b/cat{0}"), ("cat{0}", "cat{1}"), ("cat{0}", "Cat{0}")],
    ids=["two folders", "two extensions", "letter case"],
)
def test_inputs_that_would_share_an_output_are_refused_before_any_work(command, names, models, tmp_path):
    first, second = (make_input(tmp_path / name.format(*command.extensions), n) for n, name in enumerate(names))
    out = tmp_path / "out"
    result = command.invoke(models, [first, second], out)
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert line.startswith(f"error: {first} and {second} would both write ")
    assert line.endswith("; rename one or run them separately")
    assert not out.exists()


def test_the_policy_is_stated_in_each_commands_help():
    for command in COMMANDS:
        page = runner.invoke(cli.app, [command.name, "--help"], env={"COLUMNS": "400"}).stdout
        text = " ".join(page.replace("│", " ").split())
        assert "would write the same file name" in text, command.name


# ---------------------------------------------------------------- no command reads its own outputs (item 12)


@pytest.mark.parametrize("name", ["depth", "sketch"])
def test_rerun_with_out_inside_the_input_folder_reads_no_outputs_or_temp_files(name, models, tmp_path):
    command = BY_NAME[name]
    photos = [make_input(tmp_path / f"{stem}.png", seed) for seed, stem in enumerate(("cat", "dog"))]
    for run in range(2):
        result = command.invoke(models, [tmp_path], tmp_path, "--json")
        assert result.exit_code == 0, result.output
        assert [row["input"] for row in json_rows(result.stdout)] == [str(p) for p in photos]
        assert [row["status"] for row in json_rows(result.stdout)] == ["ok", "ok"] if run == 0 else ["skipped"] * 2
        make_input(tmp_path / leftover_temp_name(tmp_path))
    written = {p.name for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith(".")}
    expected = {template.format(stem) for stem in ("cat", "dog") for template in command.outputs}
    assert written == expected | {"cat.png", "dog.png"}


def test_expand_inputs_leaves_out_temp_files_and_own_outputs_but_keeps_lookalikes_elsewhere(tmp_path):
    out = tmp_path / "out"
    for name in ("cat.png", "out/cat_depth.png", "out/cat_depth_color.png", "out/bird.png", "elsewhere/old_depth.png"):
        make_input(tmp_path / name)
    for folder in (tmp_path, out):
        make_input(folder / leftover_temp_name(folder))
    names = depth.output_names(out)
    found = expand_inputs([tmp_path], IMAGE_EXTENSIONS, outputs=names)
    assert found == [tmp_path / "cat.png", tmp_path / "elsewhere/old_depth.png", out / "bird.png"]
    explicit = expand_inputs([out / "cat_depth.png", out / "bird.png"], IMAGE_EXTENSIONS, outputs=names)
    assert explicit == [out / "bird.png"]
    with pytest.raises(BadInputError, match="cat_depth.png: is this command's own output in --out"):
        expand_inputs([out / "cat_depth.png"], IMAGE_EXTENSIONS, outputs=names)


def test_expand_inputs_keeps_one_name_per_file(tmp_path, monkeypatch):
    make_input(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["cat.png", str(tmp_path / "cat.png"), "."], IMAGE_EXTENSIONS) == [Path("cat.png")]


# ---------------------------------------------------------------- --out must be a folder (item 9a)


@pytest.mark.parametrize(
    "command, layout",
    [(command, None) for command in COMMANDS] + [(BY_NAME["features"], "pooled")],
    ids=[command.name for command in COMMANDS] + ["features pooled"],
)
@pytest.mark.parametrize("where", ["the file", "below the file"])
def test_out_that_is_a_file_is_bad_usage_in_one_line(command, layout, where, models, tmp_path):
    image = make_input(tmp_path / f"in{command.extensions[0]}")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    out = blocker if where == "the file" else blocker / "sub"
    result = command.invoke(models, [image], out, *(["--layout", layout] if layout else []))
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [f"error: {blocker}: is not a folder (--out)"]
    assert blocker.read_text() == "keep me"


# ---------------------------------------------------------------- user text in tables (item 9f)


def rendered(renderable) -> str:
    console = Console(file=io.StringIO(), width=300, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def test_depth_table_shows_a_path_holding_markup_as_written(models, tmp_path, monkeypatch):
    make_input(tmp_path / "[" / "b]" / "cat.png")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["depth", "[/b]/cat.png", "--model", str(models["rn"]), "--out", "o",
                                     "--device", "cpu", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[/b]/cat.png" in result.stdout


def test_audio_and_models_tables_show_markup_in_names_as_written():
    report = {"labels": "custom", "multilabel": False, "results": [
        {"input": "[/b]a.wav", "status": "ok", "tags": [{"label": "[red]bell", "score": 0.5}],
         "images": [{"image": "[/i]x.png", "score": 1.0, "cosine": 0.1}], "texts": [
             {"text": "[bold]", "score": 1.0, "cosine": 0.1}]},
        {"input": "[/u]b.wav", "status": "failed", "error": "[/u]b.wav: not audio"},
    ]}  # fmt: skip
    text = "".join(rendered(table) for table in cli.audio.tag_tables(report))
    for literal in ("[/b]a.wav", "[red]bell", "[/i]x.png", "[bold]", "[/u]b.wav: not audio"):
        assert literal in text
    row = {"name": "[/b]mine", "present": True, "verified": None, "size": 10, "path": "/m/[/i]mine.pt"}
    text = rendered(cli.models.models_table([row], "models"))
    assert "[/b]mine" in text and "/m/[/i]mine.pt" in text


def test_show_prints_text_lines_as_written_and_tables_with_their_markup(capsys):
    table = Table()
    table.add_column("verified")
    table.add_row("[green]yes[/]")
    show(Common(), {"rows": []}, lambda: ["imported [/b]mine -> /m/[red]x.pt", table])
    out = capsys.readouterr().out
    assert "imported [/b]mine -> /m/[red]x.pt" in out
    assert "yes" in out and "[green]" not in out


def test_show_with_json_prints_only_the_result_and_builds_no_table(capsys):
    def render():
        raise AssertionError("nothing is rendered for --json")

    show(Common(json=True), {"rows": [1, "[b]"]}, render)
    assert json.loads(capsys.readouterr().out) == {"rows": [1, "[b]"]}


def test_progress_descriptions_are_shown_as_written(monkeypatch):
    console = Console(file=io.StringIO(), width=200, force_terminal=True)
    monkeypatch.setattr(ui, "stderr", console)
    monkeypatch.setattr(ui, "_quiet", False)
    with ui.progress() as bar:
        bar.add_task("[/b]cat.png", total=1)
    assert "[/b]cat.png" in console.file.getvalue()


# ---------------------------------------------------------------- pooled features keep their progress (item 13)


class Killed(BaseException):
    """What SIGKILL does to a process: it stops, and no `finally` runs."""


@pytest.fixture
def many_photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    for index in range(7):
        make_input(folder / f"p{index}.png", seed=index)
    return folder


def pooled(photos: Path, out: Path, model: Path, *extra):
    args = ["features", photos, "--layout", "pooled", "--model", model, "--out", out, "--batch-size", 2,
            "--device", "cpu", "--quiet", *extra]  # fmt: skip
    return runner.invoke(cli.app, [str(arg) for arg in args])


def fail_at_batch(monkeypatch, batch: int, action) -> None:
    """Make the `batch`-th image batch call `action()` instead of encoding."""
    calls = []
    encode = CLIP.encode_image

    def counted(self, image):
        calls.append(1)
        if len(calls) == batch:
            action()
        return encode(self, image)

    monkeypatch.setattr(CLIP, "encode_image", counted)


def test_pooled_rows_saved_before_a_kill_are_kept_and_a_rerun_completes_them(
    many_photos, tmp_path, tiny_vit_path, monkeypatch
):
    assert pooled(many_photos, tmp_path / "whole", tiny_vit_path).exit_code == 0
    whole = np.load(tmp_path / "whole" / "pooled.npy")

    out = tmp_path / "killed"
    dead = []
    write = features._write_pooled
    monkeypatch.setattr(features, "_write_pooled", lambda *args: None if dead else write(*args))
    monkeypatch.setattr(features, "SAVE_SECONDS", 0.0)  # save after every batch
    monkeypatch.setattr(features, "SAVE_COST_RATIO", 0.0)

    def kill():
        dead.append(True)
        raise Killed

    with monkeypatch.context() as patch:
        fail_at_batch(patch, 3, kill)
        with pytest.raises(Killed):
            features.run(sorted(many_photos.iterdir()), out=out, layout="pooled", model_name=str(tiny_vit_path),
                         batch_size=2, device="cpu")  # fmt: skip
    kept = json.loads((out / "pooled.json").read_text())["images"]
    assert [Path(name).name for name in kept] == ["p0.png", "p1.png", "p2.png", "p3.png"]

    dead.clear()
    rerun = pooled(many_photos, out, tiny_vit_path, "--json")
    assert rerun.exit_code == 0, rerun.output
    assert [row["status"] for row in json_rows(rerun.stdout)] == ["skipped"] * 4 + ["ok"] * 3
    np.testing.assert_allclose(np.load(out / "pooled.npy"), whole, rtol=1e-5, atol=1e-6)


def test_sigterm_saves_the_pooled_rows_and_exits_as_interrupted(many_photos, tmp_path, tiny_vit_path, monkeypatch):
    fail_at_batch(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    result = pooled(many_photos, tmp_path / "out", tiny_vit_path)
    assert result.exit_code == 130 and error_lines(result) == ["error: interrupted"]
    kept = json.loads((tmp_path / "out" / "pooled.json").read_text())["images"]
    assert [Path(name).name for name in kept] == ["p0.png", "p1.png", "p2.png", "p3.png"]
    assert np.load(tmp_path / "out" / "pooled.npy").shape[0] == 4
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_in_any_command_cleans_up_as_ctrl_c_does(many_photos, tmp_path, tiny_rn_path, monkeypatch):
    """depth killed while writing its fifth file: exit 130, no temp file, every file whole, a rerun completes."""
    writes = []
    real_atomic_write = depth.atomic_write

    @contextlib.contextmanager
    def write_then_terminate(path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 5:
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                signal.raise_signal(signal.SIGTERM)
        with real_atomic_write(path, *args, **kwargs) as handle:
            yield handle

    monkeypatch.setattr(depth, "atomic_write", write_then_terminate)
    out = tmp_path / "out"
    args = ["depth", many_photos, "--model", tiny_rn_path, "--out", out, "--device", "cpu", "--quiet"]
    result = runner.invoke(cli.app, [str(arg) for arg in args])
    assert result.exit_code == 130 and error_lines(result) == ["error: interrupted"]
    files = sorted(out.iterdir())
    assert files and not [path for path in files if path.name.startswith(".")]  # no temp file
    assert all(np.load(path).ndim == 2 for path in files if path.suffix == ".npy")  # writes under way finished whole
    assert all(cv2.imread(str(path)) is not None for path in files if path.suffix == ".png")
    monkeypatch.setattr(depth, "atomic_write", real_atomic_write)
    rerun = runner.invoke(cli.app, [str(arg) for arg in args])
    assert rerun.exit_code == 0 and len(list(out.iterdir())) == 3 * 7


# ---------------------------------------------------------------- retrieve-eval ids (stems) must be unambiguous


def test_retrieve_eval_refuses_two_videos_with_one_id(tmp_path):
    first, second = (make_input(tmp_path / folder / "video7.mp4") for folder in ("a", "b"))
    make_input(tmp_path / "a" / "video8.mp4")
    with pytest.raises(BadInputError) as caught:
        retrieve.find_videos(tmp_path, ["video7", "video8"])
    assert str(caught.value) == f"{first} and {second} both have the id video7; keep one"
    assert retrieve.find_videos(tmp_path / "a", ["video8"]) == {"video8": tmp_path / "a" / "video8.mp4"}


def test_audio_tag_image_folder_leaves_out_temp_files(tmp_path):
    image = make_input(tmp_path / "images" / "bell.png")
    make_input(tmp_path / "images" / leftover_temp_name(tmp_path / "images"))
    assert audio._image_folder(tmp_path / "images") == [image]
    (tmp_path / "empty").mkdir()
    make_input(tmp_path / "empty" / leftover_temp_name(tmp_path / "empty"))
    with pytest.raises(BadInputError, match="empty: no images"):
        audio._image_folder(tmp_path / "empty")


def test_a_named_pipe_is_refused_instead_of_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    with pytest.raises(BadInputError) as caught:
        expand_inputs([fifo], IMAGE_EXTENSIONS)
    assert str(caught.value) == f"{fifo}: not a regular file (pipes, sockets and devices are not read)"
    make_input(tmp_path / "real.png")
    assert expand_inputs([tmp_path], IMAGE_EXTENSIONS) == [tmp_path / "real.png"]  # folders skip it silently


def test_an_out_folder_that_cannot_be_written_is_refused_before_any_work(models, tmp_path):
    image = make_input(tmp_path / "in" / "a.png")
    out = Path("/proc/clipcli-cannot-write-here")
    result = runner.invoke(cli.app, ["depth", str(image), "--model", str(models["rn"]), "--out", str(out)])
    assert result.exit_code == 2
    assert error_lines(result)[0].startswith("error: /proc: cannot write here (--out): ")
    assert len(error_lines(result)) == 1
