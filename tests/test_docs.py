"""The docs cannot drift from the code: links and anchors resolve, shown commands parse, named extras exist.

README.md and docs/*.md are read as GitHub renders them:
- every relative link ``[text](path#anchor)`` names a file of the repository, and every ``#anchor`` a heading
  of that file, by GitHub's slug rule (lower case, punctuation dropped, spaces to '-', repeats '-1', '-2' ...);
- every ``python -m MODULE ...`` (and ``torchrun ... -m MODULE``) line in a fenced code block, and every
  ``u2net ...`` line, is parsed by that module's own ``build_parser()``: an unknown option or a bad value fails;
- every extra the text names (``.[a,b]``, ``u2net-toolkit[a]``, "the `a` extra") is in pyproject.toml.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import textwrap
import unicodedata
from pathlib import Path

import pytest

from u2net.cli import resolve

REPO = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")  # 3.10 lacks it
    return tomllib.loads((REPO / "pyproject.toml").read_text())
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGES = ("runtime", "export", "train", "benchmarks", "u2net")
FENCE = re.compile(r"^(```|~~~)")
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "<", "2>", "&"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# -- reading Markdown ----------------------------------------------------------------------------------------


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, info string, lines) of each fenced code block."""
    blocks, current, start, info = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line.lstrip())
        if match and current is None:
            current, start, info = [], number + 1, line.lstrip()[3:].strip()
        elif match:
            blocks.append((start, info, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def heading_text(line: str) -> str | None:
    """The text of an ATX heading as GitHub renders it (inline code and emphasis markers gone, links' text
    kept), or None when ``line`` is no heading."""
    match = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
    if not match:
        return None
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return text.replace("`", "").replace("*", "")


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case; letters, digits, '_', '-' and spaces kept; spaces become '-'."""
    kept = "".join(ch for ch in text.lower()
                   if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N", "M"))  # fmt: skip
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        text = heading_text(line)
        if text is None:
            continue
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link and image outside code (inline code spans removed first)."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)
        for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            found.append((number, match.group(1)))
        for match in re.finditer(r"^\s*\[[^\]]+\]:\s*(\S+)", line):  # reference definitions
            found.append((number, match.group(1)))
    return found


# -- the checks ------------------------------------------------------------------------------------------------


def test_docs_exist_and_the_front_page_is_short():
    assert (REPO / "docs").is_dir() and len(DOCS) >= 8
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_slug_follows_githubs_rule():
    assert slug("Whole-folder throughput: python -m benchmarks.pipeline") == \
        "whole-folder-throughput-python--m-benchmarkspipeline"
    assert slug("Bulk jobs across machines: --shard K/N") == "bulk-jobs-across-machines---shard-kn"
    assert slug("Speed (320×320, batch 1, random weights)") == "speed-320320-batch-1-random-weights"
    assert slug("Metrics (train/metrics.py)") == "metrics-trainmetricspy"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_and_anchors_resolve(doc):
    problems = []
    for number, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (doc.parent / file_part).resolve() if file_part else doc
        if not destination.exists():
            problems.append(f"{_rel(doc)}:{number}: {target}: no such file")
            continue
        if anchor:
            if destination.suffix != ".md":
                problems.append(f"{_rel(doc)}:{number}: {target}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(destination):
                problems.append(f"{_rel(doc)}:{number}: {target}: no heading with that anchor in {destination.name}")
    assert not problems, "\n".join(problems)


# -- commands ------------------------------------------------------------------------------------------------


def logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Lines with ``\\`` continuations joined: (offset of the first line, text)."""
    out, buffer, first = [], "", 0
    for offset, line in enumerate(lines):
        if not buffer:
            first = offset
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        out.append((first, buffer + line))
        buffer = ""
    if buffer:
        out.append((first, buffer))
    return out


def _placeholders(text: str) -> str:
    """Shell expansions stand for a value: ``$((X+1))``, ``$VAR``, ``${VAR}`` -> 1."""
    text = re.sub(r"\$\(\([^)]*\)\)", "1", text)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "1", text)


def _tokens(text: str) -> list[str]:
    """shlex words with comments cut; a synopsis' ``[...]`` read as given and ``a|b`` as ``a``; ``...`` dropped."""
    words = []
    for word in shlex.split(_placeholders(text), comments=True):
        if word in ("...", "…") or set(word) <= set("[]"):
            continue
        if word.startswith("[") or word.endswith("]"):
            word = word.strip("[]")
            if "|" in word and not word.startswith("-"):
                word = word.split("|")[0]
        words.append(word)
    return words


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) for each ``python -m MODULE`` / ``torchrun -m MODULE`` / ``u2net ...`` command."""
    found = []
    for segment in _split_on_operators(_tokens(text)):
        for i, word in enumerate(segment):
            name = Path(word).name
            if re.fullmatch(r"python[0-9.]*", name) and segment[i + 1 : i + 2] == ["-m"] and i + 2 < len(segment):
                found.append((segment[i + 2], segment[i + 3 :]))
                break
            if name == "torchrun" and "-m" in segment[i:]:
                at = segment.index("-m", i)
                found.append((segment[at + 1], segment[at + 2 :]))
                break
            if name == "u2net" and i == _first_command_word(segment):
                found.append(("u2net", segment[i + 1 :]))
                break
    return found


def _first_command_word(segment: list[str]) -> int:
    """Index of the command in ``VAR=value cmd args``."""
    i = 0
    while i < len(segment) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[i]):
        i += 1
    return i


def _split_on_operators(words: list[str]) -> list[list[str]]:
    segments, current = [], []
    for word in words:
        if word in SHELL_OPERATORS:
            segments.append(current)
            current = []
        else:
            current.append(word)
    return [*segments, current]


def parser_module(module: str) -> str:
    """The module whose ``build_parser`` serves ``python -m module``: the module itself, or for a package the
    module its ``__main__`` takes ``main`` from when ``__main__`` does not define the parser itself."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"python -m {module}: no such module"
    if spec.submodule_search_locations is None:
        return module
    main = Path(spec.submodule_search_locations[0]) / "__main__.py"
    tree = ast.parse(main.read_text(encoding="utf-8"))
    if any(isinstance(node, ast.FunctionDef) and node.name == "build_parser" for node in tree.body):
        return f"{module}.__main__"
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == "main" for alias in node.names):
            return node.module
    raise AssertionError(f"python -m {module}: cannot tell which parser its __main__ uses")


def check_parses(module: str, args: list[str]) -> str | None:
    """None when ``module``'s own parser accepts ``args``, else its complaint."""
    target = parser_module(module)
    try:
        mod = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        pytest.skip(f"{target} needs {exc.name}, not installed here")
    assert hasattr(mod, "build_parser"), f"{target} has no build_parser(): add one so its docs can be checked"
    parser = mod.build_parser()
    parser.exit_on_error = False
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            parser.parse_args(args)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "parse error"
    except Exception as exc:  # argparse.ArgumentError and friends
        return str(exc)
    return None


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, module, args) of every command line in every code block of the docs."""
    out = []
    for doc in DOCS:
        for start, info, lines in code_blocks(doc.read_text(encoding="utf-8")):
            if info and info.split()[0] not in ("bash", "sh", "shell", "console", "text", ""):
                continue
            for offset, text in logical_lines(lines):
                try:
                    found = commands(text)
                except ValueError:  # not shell (e.g. a table or output sample)
                    continue
                for module, args in found:
                    out.append((f"{_rel(doc)}:{start + offset}", module, args))
    return out


DOCUMENTED = documented_commands()


def test_docs_show_commands():
    modules = {module for _, module, _ in DOCUMENTED}
    assert {"runtime.infer", "export.fetch", "export.to_onnx", "train", "u2net"} <= modules


@pytest.mark.parametrize(("where", "module", "args"), DOCUMENTED, ids=[w for w, _, _ in DOCUMENTED])
def test_documented_command_parses(where, module, args):
    if module == "u2net":
        found = resolve(args)
        assert found is not None, f"{where}: u2net {shlex.join(args)}: no such subcommand"
        command, rest, _ = found
        module, args = command.module, rest
    if module.split(".")[0] not in PACKAGES:
        pytest.skip(f"{module} is not this project's")
    problem = check_parses(module, args)
    assert problem is None, f"{where}: python -m {module} {shlex.join(args)}: {problem}"


def test_the_parser_check_catches_an_unknown_flag():
    assert check_parses("export.fetch", ["u2net", "--no-such-flag"]) is not None
    assert check_parses("runtime", ["-e", "x.onnx", "in/"]) is None
    assert commands("python -m export.to_onnx CKPT [-o OUT.onnx] [--model auto|u2net] ...  # note") == [
        ("export.to_onnx", ["CKPT", "-o", "OUT.onnx", "--model", "auto"])]
    assert commands("make serve-venv && .venv-serve/bin/python -m runtime.serve --engine m.onnx") == [
        ("runtime.serve", ["--engine", "m.onnx"])]
    assert commands("U2NET_WEIGHTS=~/x.onnx u2net demo") == [("u2net", ["demo"])]


# -- extras --------------------------------------------------------------------------------------------------


def extras_named(text: str) -> set[str]:
    names: set[str] = set()
    for group in re.findall(r"\.\[([A-Za-z0-9_,\- ]+)\]", text):  # .[a,b]
        names.update(group.split(","))
    for group in re.findall(r"u2net-toolkit\[([A-Za-z0-9_,\- ]+)\]", text):
        names.update(group.split(","))
    names.update(re.findall(r"`([A-Za-z0-9_-]+)` extras?\b", text))  # "the `video` extra"
    names.update(re.findall(r"[Tt]he '([A-Za-z0-9_-]+)' extra\b", text))
    return {name.strip() for name in names if name.strip()}


def test_extras_named_in_the_docs_exist():
    declared = set(pyproject()["project"]["optional-dependencies"])
    named = {}
    for doc in DOCS:
        for name in extras_named(doc.read_text(encoding="utf-8")):
            named.setdefault(name, _rel(doc))
    assert {"cpu", "export", "serve"} <= set(named)  # the regexes still find the usual forms
    missing = {name: where for name, where in named.items() if name not in declared}
    assert not missing, f"extras named in the docs but not in pyproject.toml: {missing}"


def test_makefile_extras_exist():
    declared = set(pyproject()["project"]["optional-dependencies"])
    makefile = (REPO / "Makefile").read_text()
    extras = re.search(r"^EXTRAS \?= (\S+)", makefile, re.M).group(1).split(",")
    assert set(extras) <= declared


# -- Python examples -------------------------------------------------------------------------------------------


def python_imports() -> list[tuple[str, str, str]]:
    """(where, module, name) of every ``from module import name`` in the docs' Python blocks (which must parse)."""
    out = []
    for doc in DOCS:
        for start, info, lines in code_blocks(doc.read_text(encoding="utf-8")):
            if info.split()[:1] != ["python"]:
                continue
            tree = ast.parse(textwrap.dedent("\n".join(lines)), filename=f"{_rel(doc)}:{start}")  # a SyntaxError fails the suite
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                    out += [(f"{_rel(doc)}:{start + node.lineno - 1}", node.module, a.name) for a in node.names]
    return out


IMPORTS = python_imports()


@pytest.mark.parametrize(("where", "module", "name"), IMPORTS, ids=[f"{w} {m}.{n}" for w, m, n in IMPORTS])
def test_documented_python_imports_exist(where, module, name):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in PACKAGES:
            raise AssertionError(f"{where}: from {module} import {name}: no module {exc.name}") from None
        pytest.skip(f"{module} needs {exc.name}")
    assert hasattr(mod, name), f"{where}: from {module} import {name}: {module} has no {name}"


def test_every_extra_is_in_the_front_pages_table():
    """The README's install table lists every extra pyproject.toml declares (its first column)."""
    declared = set(pyproject()["project"]["optional-dependencies"])
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = [line for _, line in prose_lines(readme) if line.startswith("| `")]
    listed = {name for line in rows for name in re.findall(r"`([A-Za-z0-9_-]+)`", line.split("|")[1])}
    assert declared <= listed, f"extras missing from the README's table: {sorted(declared - listed)}"
