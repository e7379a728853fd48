"""What reaches stderr is clipcli's own lines: `error: ...`, notices, `warning: ...`; never a library's source lines."""

from __future__ import annotations

import pickle

import numpy as np
from makers.images import write_image
from makers.points import cube_points, write_npy, write_xyz
from typer.testing import CliRunner

from clipcli.cli import app

runner = CliRunner()


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_warning_during_a_command_is_one_line_naming_the_file(tmp_path, tiny_vit_path):
    partly_nan = cube_points(100, 0)
    partly_nan[:7] = np.nan
    cloud = write_npy(tmp_path / "partly_nan.npy", partly_nan)
    good = write_xyz(tmp_path / "good.xyz", cube_points(100, 1))
    args = ["point-classify", cloud, good, "--labels", "a,b", "--points", "64", "--model", tiny_vit_path,
            "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    assert stderr_lines(result) == [f"warning: {cloud}: dropped 7 of 100 points with NaN or infinite coordinates"]


def test_torchs_pickle_protocol_warning_does_not_precede_the_refusal(tmp_path):
    image = tmp_path / "a.png"
    write_image(image, np.full((32, 32, 3), 100, np.uint8))
    checkpoint = tmp_path / "plain.pkl"
    checkpoint.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    result = runner.invoke(app, ["depth", str(image), "--model", str(checkpoint), "--device", "cpu"])
    assert result.exit_code == 2
    assert stderr_lines(result) == [
        f"error: {checkpoint}: checkpoint needs code execution to load; pass --trust-checkpoint if you trust its source"
    ]


def test_names_holding_emoji_codes_print_as_written(tmp_path, tiny_vit_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_xyz(tmp_path / "chair:smile:.xyz", cube_points(100, 0))
    args = ["point-classify", "chair:smile:.xyz", "--labels", "a,b", "--points", "64", "--model", tiny_vit_path,
            "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    assert "chair:smile:" in result.stdout and "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" not in result.stdout


def test_first_line_quotes_a_libraries_message_or_names_its_type():
    from clipcli.errors import first_line

    assert first_line(RuntimeError("\n  storage mismatch  \ntraceback line")) == "storage mismatch"
    assert first_line(KeyError()) == "KeyError"  # str(KeyError()) is "": no IndexError here
    assert first_line(OSError("x" * 500)) == "x" * 200
    assert first_line("") == "unknown error"
