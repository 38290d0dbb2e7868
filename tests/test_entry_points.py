"""The ``u2net`` console script: installed by ``pip install -e .``, and the same program as the ``python -m`` forms."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import sysconfig
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest

from u2net import cli

REPO = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")  # 3.10 lacks it
    return tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPT = Path(sys.executable).parent / "u2net"
ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
ALL = [*cli.COMMANDS.items(), *((f"{g} {n}", c) for g, table in cli.GROUPS.items() for n, c in table.items())]


def u2net(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=timeout)


def test_pyproject_declares_the_script():
    scripts = pyproject()["project"]["scripts"]
    assert scripts == {"u2net": "u2net.cli:main"}


def test_the_script_is_installed():
    # The installed distribution in this interpreter's site-packages (an *.egg-info left in the source tree by
    # a build would shadow it for importlib.metadata when the repository is on sys.path).
    site = sysconfig.get_paths()["purelib"]
    dists = [d for d in importlib_metadata.distributions(path=[site]) if d.metadata["Name"] == "u2net-toolkit"]
    assert dists, f"u2net-toolkit is not installed in {site}: pip install -e ."
    points = [e.value for e in dists[0].entry_points if e.group == "console_scripts" and e.name == "u2net"]
    assert points == ["u2net.cli:main"], "the installed metadata is stale: pip install -e ."
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK), f"{SCRIPT} missing: pip install -e ."


def test_help_lists_every_command_without_importing_them():
    proc = u2net("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for name, command in ALL:
        assert f"  {name} " in proc.stdout and f"python -m {command.module})" in proc.stdout
    code = "import sys; from u2net.cli import main; main(['--help']); print(sorted({'torch', 'onnxruntime', " \
           "'runtime.infer', 'export.to_onnx'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("words", [["infer"], ["fetch"], ["export", "onnx"], ["train"], ["bench", "fps"]],
                         ids=" ".join)  # fmt: skip
def test_subcommand_help_is_the_tools_own(words):
    proc = u2net(*words, "--help")
    command, _, _ = cli.resolve(words)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m {command.module} ")


@pytest.mark.parametrize(("name", "command"), ALL, ids=[name for name, _ in ALL])
def test_every_row_names_a_real_tool(name, command):
    """The target exists and takes argv; its parser calls itself what the table says `python -m` runs."""
    module, _, function = command.target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        pytest.skip(f"{module} needs {exc.name}")
    assert callable(getattr(mod, function))
    assert importlib.util.find_spec(command.module) is not None
    if hasattr(mod, "build_parser"):
        assert mod.build_parser().prog == f"python -m {command.module}"


def test_arguments_and_exit_status_pass_through(tmp_path):
    missing = u2net("infer", "-e", str(tmp_path / "missing.onnx"), str(tmp_path))
    direct = subprocess.run([sys.executable, "-m", "runtime.infer", "-e", str(tmp_path / "missing.onnx"),
                             str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)  # fmt: skip
    assert missing.returncode == direct.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == direct.stderr.strip().splitlines()[-1]
    usage = u2net("fetch", "u2netp", "--no-such-option")
    assert usage.returncode == 2 and "unrecognized arguments: --no-such-option" in usage.stderr


def test_a_real_run_through_the_script(tmp_path):
    """u2net fetch with a local file: the arguments reach export.fetch and its success comes back as 0."""
    from test_fetch import official_like_onnx

    data = official_like_onnx()
    source = tmp_path / "u2netp.onnx"
    source.write_bytes(data)
    proc = u2net("fetch", "u2netp", "--from", str(source), "--md5", hashlib.md5(data).hexdigest(),
                 "-o", str(tmp_path / "w"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'w' / 'u2netp.onnx'}")


def test_in_process_dispatch(tmp_path, capsys):
    assert cli.main(["synthetic", "--out", str(tmp_path / "s"), "--n", "2", "--size", "32"]) == 0
    assert len(list((tmp_path / "s" / "images").iterdir())) == 2
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.startswith("u2net-toolkit ")


@pytest.mark.parametrize(("argv", "message"), [
    (["nope"], "unknown command 'nope'"),
    (["export"], "export needs one of: onnx, trt, triton"),
    (["bench", "nope"], "bench needs one of: fps,"),
    ([], ""),
])  # fmt: skip
def test_bad_commands_are_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and "usage: u2net COMMAND" in out + err


def test_a_missing_extra_is_one_line(monkeypatch, capsys):
    def needs_torch(argv):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "entry", lambda command: needs_torch)
    assert cli.main(["export", "onnx", "x.pth"]) == 2
    assert capsys.readouterr().err == "error: torch is not installed: pip install -e '.[export]'\n"


def test_python_dash_m_u2net():
    proc = subprocess.run([sys.executable, "-m", "u2net", "fetch", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m export.fetch ")
