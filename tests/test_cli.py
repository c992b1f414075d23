"""The command line: fast and light start-up, one-line errors with exit code 2, nothing half-written."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moduseg_core.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MODUSEG_LOAD_PLUGINS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.mark.parametrize(
    "argv", [["--help"], ["plugins", "list"], ["plugins", "list", "--json"], ["plugins", "show", "dinov2"]]
)
def test_startup_imports_no_heavy_library(argv):
    code = (
        "import sys\n"
        "from moduseg_core.cli import main\n"
        "from moduseg_core.contract.plugins import heavy_modules_loaded\n"
        f"code = main({argv!r})\n"
        "print('HEAVY', heavy_modules_loaded(), code)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY [] 0"


def test_plugins_list_json_shows_every_builtin_with_status(capsys):
    assert main(["plugins", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {(r["kind"], r["name"]) for r in rows}
    for expected in [
        ("proposer", "slic"),
        ("encoder", "dinov2"),
        ("index", "faiss"),
        ("labeler", "gt"),
        ("dataset", "voc"),
    ]:
        assert expected in names
    gt = next(r for r in rows if r["name"] == "gt")
    assert gt["oracle"] is True
    # importable and missing are what this environment says, recomputed here from each spec's requires
    from moduseg_core.contract.plugins import get_spec

    for r in rows:
        assert r["requires"] == list(get_spec(r["kind"], r["name"]).requires)
        absent = [m for m in r["requires"] if importlib.util.find_spec(m) is None]
        assert r["missing"] == absent and r["importable"] is (not absent), r
    assert sum(bool(r["requires"]) for r in rows) >= 5  # the check above is not vacuous


def test_plugins_show_lists_options(capsys):
    assert main(["plugins", "show", "erode"]) == 0
    out = capsys.readouterr().out
    assert "iterations (int ≥ 0, default 20)" in out  # what the option accepts, bounds included
    assert main(["plugins", "show", "sam"]) == 0
    out = capsys.readouterr().out
    assert "engine ('library' or 'fast', default 'fast')" in out and "checkpoint (str or null, default None)" in out


def _error(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    return lines[0]


def test_unknown_component_closest_match(capsys, tmp_path):
    line = _error(capsys, ["run", "--proposer", "slik", "--out", str(tmp_path / "x")])
    assert "unknown proposer 'slik'; did you mean 'slic'?" in line
    assert "available proposers:" in line and "felzenszwalb" in line
    assert not (tmp_path / "x").exists()


def test_unknown_option_key(capsys, tmp_path):
    line = _error(capsys, ["run", "--set", "proposer.n_segment=5", "--out", str(tmp_path / "x")])
    assert "proposer 'slic' has no option 'n_segment'; did you mean 'n_segments'?" in line


def test_wrong_option_type(capsys, tmp_path):
    line = _error(capsys, ["run", "--set", "purifier.iterations=lots", "--out", str(tmp_path / "x")])
    assert "iterations='lots' is invalid" in line and "expected int" in line


def test_a_choice_outside_its_values_names_them_once(capsys, tmp_path):
    line = _error(capsys, ["run", "--proposer", "sam2", "--set", "proposer.engine=fastt", "--out", str(tmp_path / "x")])
    assert (
        "option engine='fastt' is invalid: Input should be 'library' or 'fast'; fix it with --set proposer.engine="
        in line
    )
    assert line.count("'library' or 'fast'") == 1


def test_bad_set_syntax_and_method_key(capsys):
    assert "is not KEY=VALUE" in _error(capsys, ["run", "--set", "topk"])
    assert "method has no setting 'topk'; did you mean 'top_k'?" in _error(capsys, ["run", "--set", "method.topk=3"])


def test_bank_dir_that_is_not_a_bank(capsys, tmp_path):
    (tmp_path / "img.png").write_bytes(b"")
    line = _error(capsys, ["predict", str(tmp_path), "--bank", str(tmp_path)])
    assert f"{tmp_path} is not a moduseg bank (no manifest.json)" in line


def test_missing_config_file(capsys, tmp_path):
    line = _error(capsys, ["run", "--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml does not exist" in line


def test_config_file_unknown_key(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("proposer: slic\ntop_k: 3\n")
    line = _error(capsys, ["run", "--config", str(config)])
    assert "unknown setting 'top_k'" in line


def test_dataset_root_missing(capsys, tmp_path):
    line = _error(capsys, ["run", "--set", f"dataset.root={tmp_path / 'nowhere'}", "--out", str(tmp_path / "o")])
    assert "nowhere" in line
    assert not (tmp_path / "o").exists()


def test_debug_env_shows_traceback(tmp_path):
    env = {**os.environ, "MODUSEG_DEBUG": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "moduseg_core", "run", "--proposer", "slik"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "ModusegError" in out.stderr


def test_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).with_name("moduseg")
    out = subprocess.run([str(exe), "run", "--encoder", "dinov3x"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith("Error: unknown encoder 'dinov3x'")


def test_typer_in_the_tested_range():
    """pyproject pins the typer range that the CLI tests ran against (scripts/check_oldest_typer.sh
    runs them on the lowest); a resolver that goes past it would meet an untested parser."""
    import re
    from importlib import metadata

    spec = re.search(r'"typer>=([\d.]+),<([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert spec, "typer must be pinned to a tested range"
    low, high = (tuple(int(p) for p in v.split(".")) for v in spec.groups())
    have = tuple(int(p) for p in metadata.version("typer").split(".")[:3])
    assert low <= have < high


@pytest.mark.parametrize(
    "argv", [["run", "--no-such-flag"], ["predict"], ["nocmd"], ["run", "--out"], ["bench", "--images", "x"]]
)
def test_usage_errors_from_the_console_script_are_one_line_exit_2(argv):
    exe = Path(sys.executable).with_name("moduseg")
    out = subprocess.run([str(exe), *argv], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2, out
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in out.stderr, out.stderr


def test_bare_command_prints_help_and_version_works(capsys):
    assert main([]) == 0
    assert "Usage" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("moduseg ")
