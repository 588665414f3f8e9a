import subprocess
import sys

import torch

from walkreg.cli import main


def test_env_reports_versions_and_codecs(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "libx264" in out and "device " in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: walkreg" in capsys.readouterr().out


def test_python_dash_m_walkreg_works():
    result = subprocess.run([sys.executable, "-m", "walkreg", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "env" in result.stdout


def test_core_import_does_not_pull_optional_packages():
    code = "import sys, walkreg, walkreg.video, walkreg.cli; print(sorted(m for m in ('diffusers', 'accelerate', 'transformers', 'walkreg.pipelines', 'walkreg.train') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
