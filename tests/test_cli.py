"""The command line: help, version, common options, exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from clipcli import __version__, options
from clipcli.cli import app
from clipcli.models import weights
from clipcli.models.weights import KnownWeights
from clipcli.options import MODEL_HELP

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_help_and_version():
    result = run("--help")
    assert result.exit_code == 0 and "models" in result.output
    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"clipcli {__version__}"


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "clipcli", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"clipcli {__version__}"
    assert "pkg_resources" not in done.stderr


def command_paths() -> list[list[str]]:
    """Every command as the words that call it, read from the app, so a new command is covered untold."""
    paths = []
    for name, command in get_command(app).commands.items():
        paths += [[name, sub] for sub in getattr(command, "commands", {})] or [[name]]
    return paths


COMMAND_PATHS = command_paths()
COMMAND_IDS = [" ".join(path) for path in COMMAND_PATHS]

# Each command's arguments naming inputs that do not exist ({tmp}: a fresh folder); `models list` reads none.
MISSING_INPUTS = {
    "depth": ["{tmp}/absent.png"],
    "depth-eval": ["{tmp}/absent.png,{tmp}/absent-gt.png"],
    "audio-tag": ["{tmp}/absent.wav"],
    "audio-eval": ["{tmp}/absent"],
    "classify-action": ["{tmp}/absent.mp4"],
    "action-eval": ["{tmp}/absent.txt"],
    "sketch": ["{tmp}/absent.png"],
    "retrieve": ["{tmp}/absent", "a dog"],
    "retrieve-eval": ["{tmp}/absent.csv", "{tmp}"],
    "features": ["{tmp}/absent.png"],
    "vqa": ["{tmp}/absent.png", "what is it?"],
    "vqa-eval": ["{tmp}/absent_questions.json", "{tmp}/absent_annotations.json", "{tmp}/absent_images"],
    "point-classify": ["{tmp}/absent.ply"],
    "point-eval": ["{tmp}/absent.h5"],
    "models verify": ["{tmp}/absent.pt"],
    "models import": ["{tmp}/absent.pt"],
}


def missing_inputs(command: str, tmp_path: Path) -> list[str]:
    return [word.format(tmp=tmp_path) for word in MISSING_INPUTS.get(command, [])]


def test_all_17_commands_are_enumerated_and_each_has_a_missing_input_case():
    assert len(COMMAND_PATHS) == 17 and ["models", "import"] in COMMAND_PATHS and ["depth-eval"] in COMMAND_PATHS
    assert set(MISSING_INPUTS) | {"models list"} == set(COMMAND_IDS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=COMMAND_IDS)
def test_common_options_follow_every_subcommand(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for option in ("--device", "--quiet", "--json", "--debug"):
        assert option in result.output, option


@pytest.mark.parametrize("path", [p for p in COMMAND_PATHS if p != ["models", "list"]], ids=lambda p: " ".join(p))
def test_every_command_given_a_missing_input_exits_2_with_one_line_naming_it(path, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    result = runner.invoke(app, [*path, *missing_inputs(" ".join(path), folder), "--device", "cpu"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder / "absent") in lines[0]
    assert "Traceback" not in result.output and list(folder.iterdir()) == []


def test_models_list_json_reports_every_known_model():
    result = run("models", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    names = [row["name"] for row in rows]
    assert names[: len(weights.CLIP_URLS)] == list(weights.CLIP_URLS)
    assert all(row["present"] is False for row in rows)


def test_verify_absent_model_exits_3_with_where_to_put_it(isolated_home):
    result = run("models", "verify", "ViT-B/32")
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "ViT-B-32.pt" in lines[0] and weights.KNOWN["ViT-B/32"].sha256 in lines[0]
    assert str(isolated_home / ".cache" / "clip") in lines[0] and "MB" in lines[0]
    assert "Traceback" not in result.output


def test_debug_shows_traceback():
    result = run("models", "verify", "ViT-B/32", "--debug")
    assert result.exit_code == 3 and "Traceback" in result.stderr


def test_import_custom_file_needs_name_and_is_then_listed(tiny_vit_path, isolated_home):
    result = run("models", "import", str(tiny_vit_path))
    assert result.exit_code == 2 and "--name" in result.stderr
    result = run("models", "import", str(tiny_vit_path), "--name", "tiny", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["name"] == "tiny" and row["verified"] is True
    listed = {row["name"]: row for row in json.loads(run("models", "list", "--json").stdout)}
    assert listed["tiny"]["present"] and listed["tiny"]["known"] is False
    result = run("models", "verify", "tiny", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["verified"] is True


def test_import_known_release_by_checksum(tiny_rn_path, monkeypatch, isolated_home):
    digest = hashlib.sha256(tiny_rn_path.read_bytes()).hexdigest()
    monkeypatch.setitem(
        weights.KNOWN, "TinyRN", KnownWeights("TinyRN", f"https://x.invalid/{digest}/TinyRN.pt", digest, 1)
    )
    result = run("models", "import", str(tiny_rn_path), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["path"] == str(isolated_home / ".cache" / "clip" / "TinyRN.pt")


def test_import_refuses_non_clip_file_and_writes_nothing(tmp_path, isolated_home):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    result = run("models", "import", str(junk), "--name", "junk")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "junk.pt" in result.stderr
    assert not (isolated_home / ".cache" / "clip" / "junk.pt").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:7x"])
@pytest.mark.parametrize("path", COMMAND_PATHS, ids=COMMAND_IDS)
def test_misspelt_device_is_bad_usage_for_every_command(path, device, tmp_path):
    result = run(*path, *missing_inputs(" ".join(path), tmp_path), "--device", device)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --device '{device}': expected auto, cpu, cuda or cuda:N"


LIGHT_START = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from clipcli.cli import app

paths = []
for name, command in get_command(app).commands.items():
    paths += [[name, sub] for sub in getattr(command, "commands", {})] or [[name]]
runner = CliRunner()
codes = {" ".join(call): runner.invoke(app, call).exit_code
         for call in [["--help"], ["--version"], *([*path, flag] for path in paths for flag in ("--help", "--bad"))]}
heavy = {"torch", "torchvision", "clip", "numpy", "cv2", "av", "PIL", "scipy", "soundfile", "h5py"}
print(json.dumps({"paths": paths, "codes": codes, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def test_help_version_and_rejected_options_of_all_17_commands_import_no_heavy_module():
    done = subprocess.run([sys.executable, "-c", LIGHT_START], capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout)
    assert len(report["paths"]) == 17 and ["models", "import"] in report["paths"] and ["retrieve"] in report["paths"]
    assert report["heavy"] == []
    for call, code in report["codes"].items():
        assert code == (2 if call.endswith("--bad") else 0), call


def test_bench_startup_times_each_call_in_a_fresh_process(capsys):
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["startup", "--startup-repeats", "1", "--device", "cpu"])
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [row["call"] for row in rows] == ["--version", "--help", "point-classify --help", "bad option"]
    assert all(row["bench"] == "startup" and row["repeats"] == 1 for row in rows)
    assert all(0 < row["best_s"] < 60 for row in rows)
    assert [row["target_s"] for row in rows] == [0.3, 0.3, None, 0.5]


def _params_by_command() -> dict[str, list]:
    """Each command's parameters, by command path ("depth", "models list", ...)."""
    found = {}
    for name, command in get_command(app).commands.items():
        for sub_name, sub in (getattr(command, "commands", None) or {name: command}).items():
            found[name if sub is command else f"{name} {sub_name}"] = sub.params
    return found


def _options_named(flag: str) -> dict[str, object]:
    """Each command's parameter declared as `flag`, by command path."""
    return {path: param for path, params in _params_by_command().items() for param in params if flag in param.opts}


def test_model_top_k_and_frames_are_worded_alike_in_every_command():
    models = _options_named("--model")
    assert len(models) == 12 and all(param.help.startswith(MODEL_HELP) for param in models.values())
    top_k = _options_named("--top-k")
    assert set(top_k) == {"audio-tag", "classify-action", "retrieve", "vqa", "point-classify"}
    assert len({param.help for param in top_k.values()}) == 1 and all("-k" in p.opts for p in top_k.values())
    assert len({param.help.split(" (")[0] for param in _options_named("--frames").values()}) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["retrieve", "folder", "query", "--top-k", "0"],
        ["vqa", "a.jpg", "what?", "-k", "0"],
        ["audio-tag", "a.wav", "--top-k", "-1"],
        ["classify-action", "a.mp4", "--top-k", "0"],
        ["point-classify", "a.ply", "--top-k", "0"],
        ["classify-action", "a.mp4", "--frames", "0"],
        ["retrieve-eval", "a.csv", "videos", "--frames", "0"],
        ["features", "a.jpg", "--batch-size", "0"],
        ["audio-tag", "a.wav", "--batch-size", "0"],
        ["features", "a.jpg", "--workers", "0"],
    ],
)
def test_counts_below_1_are_refused_by_the_parser_before_any_file_is_read(args):
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "greater than or equal to 1" in result.stderr
    assert args[-2] in result.stderr and "no such file" not in result.stderr


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (
            ["depth", "a.png", "--colormap", "rainbow"],
            ["magma", "inferno", "plasma", "viridis", "turbo", "jet", "bone"],
        ),
        (["point-classify", "a.ply", "--projection", "v3"], ["v2", "v1"]),
        (["point-eval", "a.h5", "--up-axis", "x"], ["y", "z"]),
        (["retrieve", "folder", "query", "--sampling", "every"], ["uniform", "fps"]),
        (["retrieve-eval", "a.csv", "videos", "--sampling", "every"], ["uniform", "fps"]),
        (["retrieve", "folder", "query", "--ann", "sometimes"], ["auto", "on", "off"]),
        (["features", "a.jpg", "--layout", "grid"], ["vqa", "caption", "pooled"]),
        (["features", "a.jpg", "--dtype", "bfloat16"], ["float16", "float32"]),
        (["sketch", "a.png", "--animate", "webm"], ["gif", "mp4"]),
    ],
)
def test_a_bad_mode_is_refused_by_the_parser_with_the_list_of_choices(args, choices):
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and f"'{args[-1]}' is not one of" in result.stderr
    assert ", ".join(f"'{choice}'" for choice in choices) in result.stderr


def test_mode_choices_are_the_values_the_pipelines_accept():
    from clipcli.pipelines import features, point, point_prep, retrieve
    from clipcli.render.colormap import COLORMAPS
    from clipcli.store import ann

    assert list(options.Projection) == list(point.PROJECTIONS)
    assert list(options.Subsample) == list(point_prep.SAMPLINGS)
    assert list(options.UpAxis) == list(point_prep.UP_AXES)
    assert list(options.FrameSampling) == [name for name in retrieve.SAMPLINGS if name != "keyframes"]
    assert list(options.AnnMode) == list(ann.MODES)
    assert list(options.Colormap) == list(COLORMAPS)
    assert list(options.FeatureLayout) == list(features.LAYOUTS)
    assert set(options.Dtype) == set(features.DEFAULT_DTYPE.values())


def test_every_option_of_every_command_says_what_it_does():
    undocumented = [
        f"{path} {param.opts[0]}"
        for path, params in _params_by_command().items()
        for param in params
        if param.param_type_name == "option" and not (param.help or "").strip()
    ]
    assert undocumented == []


def test_point_commands_subsample_and_normalize_alike_with_their_own_defaults():
    for path, normalize_default, subsample_default in (("point-classify", True, "fps"), ("point-eval", False, "first")):
        params = {param.name: param for param in _params_by_command()[path]}
        assert params["subsample"].opts == ["--subsample"] and params["subsample"].default == subsample_default
        assert params["normalize"].opts == ["--normalize"] and params["normalize"].secondary_opts == ["--no-normalize"]
        assert params["normalize"].default is normalize_default
        result = runner.invoke(app, [path, "a.h5", "--sampling", "fps"])
        assert result.exit_code == 2 and "No such option: --sampling" in result.stderr


def test_sketch_options_reach_their_settings_by_name(tmp_path, monkeypatch):
    from PIL import Image

    from clipcli.pipelines import sketch
    from clipcli.runner import Report

    with pytest.raises(TypeError):
        sketch.SketchSettings(16, 2000)
    calls = []
    monkeypatch.setattr(sketch, "run", lambda paths, **options: calls.append(options) or Report("sketch", []))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    numbers = ["--strokes", "7", "--iterations", "11", "--seeds", "2", "--width", "2.5", "--augmentations", "3"]
    switches = ["--lr", "0.5", "--patience", "4", "--seed", "9", "--no-early-stop", "--no-cuda-graphs"]
    result = run("sketch", str(tmp_path / "a.png"), *numbers, *switches, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert calls[0]["settings"] == sketch.SketchSettings(
        strokes=7, iterations=11, seeds=2, width=2.5, augmentations=3, lr=0.5, patience=4, seed=9,
        early_stop=False, cuda_graphs=False,
    )  # fmt: skip


def test_mode_choices_are_plain_strings_that_print_as_their_values():
    """Pipelines get enum members: they must compare, print and format as the bare value on every Python."""
    from clipcli.options import Choice, Colormap

    assert len(Choice.__subclasses__()) >= 9
    member = Colormap.MAGMA
    assert member == "magma" and str(member) == "magma" and f"{member}" == "magma" and f"{member:>6}" == " magma"
    assert isinstance(member, str)


def test_the_app_help_names_every_method_and_command_family():
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    for name in ("sketch", "retrieve", "classify-action", "point-classify", "depth", "audio-tag", "features", "vqa",
                 "models", "evaluation"):  # fmt: skip
        assert name in result.stdout.split("Commands")[0], name
