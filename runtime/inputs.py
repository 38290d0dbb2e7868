"""INPUT arguments (files, folders, glob patterns) -> jobs (source file, output file), decided on resolved paths.

What this guarantees, whatever the arguments and ``-o`` are (an input folder, a symlink to one, a
folder inside one):

- no output replaces an input of the run, and no output lands outside ``-o`` (also not through a
  symlink inside it): such a file becomes a ``Problem`` and its input is never touched;
- each resolved source file becomes at most one job, however many arguments, folders, patterns
  and symlinks reach it; every real folder is searched at most once, so symlink loops end;
- unlistable folders and inaccessible paths are problems with one line each, never tracebacks.

Only paths are collected (never images), so planning a run of a million files costs paths' memory.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.io import IMAGE_SUFFIXES, UNDECODABLE_SUFFIXES
from runtime.video.formats import VIDEO_SUFFIXES

GLOB_CHARS = frozenset("*?[")
# UNDECODABLE_SUFFIXES are named by the reader, not skipped; videos go through runtime.video.
CANDIDATE_SUFFIXES = IMAGE_SUFFIXES | UNDECODABLE_SUFFIXES | VIDEO_SUFFIXES


@dataclass(frozen=True)
class Job:
    """One input file and its output; either may be a store URL (a ``str``, ``runtime.store_inputs``)."""

    source: Path | str
    target: Path | str


@dataclass(frozen=True)
class Problem:
    """An input argument or file that cannot become a job."""

    name: str
    message: str


@dataclass(frozen=True)
class Found:
    """A file an argument reached, and where its output goes below -o."""

    source: Path
    relative: Path  # where its output goes below -o (suffix replaced later)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class _Finder:
    """Walks folders and patterns; remembers every real folder searched so none is searched twice."""

    def __init__(self, out_dir: Path | None) -> None:
        self.walked: set[tuple[int, int]] = set()  # folders whose files were listed, over all arguments
        self.unlistable: set[Path] = set()  # folders already reported (``**`` lists a folder twice: walk, match)
        try:  # the output folder is never searched for inputs
            if out_dir is None:
                raise FileNotFoundError  # the outputs go elsewhere (a store URL)
            st = out_dir.stat()
            self.out_id: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            self.out_id = None

    def _first_visit(self, folder: Path, seen: set[tuple[int, int]], *, top: bool = False) -> bool:
        try:
            st = folder.stat()
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in seen or (key == self.out_id and not top):
            return False
        seen.add(key)
        return True

    def _entries(self, folder: Path) -> Generator[Problem, None, list[os.DirEntry]]:
        """``entries = yield from self._entries(folder)``: the visible entries sorted by name, or, when
        the folder cannot be listed, one Problem yielded to the caller's consumer and no entries."""
        try:
            with os.scandir(folder) as it:
                return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            if folder not in self.unlistable:
                self.unlistable.add(folder)
                yield Problem(str(folder), f"cannot list this folder: {_reason(exc)}; its files are not processed")
            return []

    def walk(self, top: Path, base: Path, *, top_level: bool = True) -> Iterator[Found | Problem]:
        """Image files below ``top`` (hidden entries skipped), with paths relative to ``base``."""
        if not self._first_visit(top, self.walked, top=top_level):
            return
        for entry in (yield from self._entries(top)):
            path = Path(top, entry.name)
            if _is_dir(entry):
                yield from self.walk(path, base, top_level=False)
            elif Path(entry.name).suffix.lower() in CANDIDATE_SUFFIXES:
                yield Found(path, path.relative_to(base))

    def glob(self, pattern: str) -> Iterator[Found | Problem]:
        """Files matching ``pattern`` (``**`` = any depth), relative to its fixed leading folders.

        The pattern is normalised first, so ``in/*/../../other/*.jpg`` means ``other/*.jpg`` and
        every match lies below the folder its outputs are placed relative to.
        """
        parts = Path(os.path.normpath(pattern)).parts
        fixed = next((i for i, part in enumerate(parts) if GLOB_CHARS & set(part)), len(parts))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        for match in self._match(base, parts[fixed:], set()):
            if isinstance(match, Problem):
                yield match
            elif match.is_dir():
                yield from self.walk(match, base, top_level=False)
            elif match.suffix.lower() in CANDIDATE_SUFFIXES:
                yield Found(match, match.relative_to(base))

    def _match(self, folder: Path, parts: tuple[str, ...], seen: set[tuple[int, int]]) -> Iterator[Path | Problem]:
        if not parts:
            yield folder
            return
        head, rest = parts[0], parts[1:]
        if head == "**":  # this folder and every folder below it, each real folder once
            # A later ``**`` in the pattern gets its own record, so this walk's record stays complete.
            if self._first_visit(folder, seen, top=True):
                yield from self._match(folder, rest, set())
            for sub in self._subfolders(folder, seen):
                if isinstance(sub, Problem):
                    yield sub
                else:
                    yield from self._match(sub, rest, set())
        elif GLOB_CHARS & set(head):
            entries = (yield from self._entries(folder)) if folder.is_dir() else []
            for entry in entries:
                if fnmatch.fnmatchcase(entry.name, head) and (not rest or _is_dir(entry)):
                    yield from self._match(Path(folder, entry.name), rest, seen)
        elif os.path.lexists(folder / head):
            yield from self._match(folder / head, rest, seen)

    def _subfolders(self, folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path | Problem]:
        """Every folder below ``folder``, symlinked ones included, each real folder once (loops end)."""
        for entry in (yield from self._entries(folder)):
            sub = Path(folder, entry.name)
            if _is_dir(entry) and self._first_visit(sub, seen):
                yield sub
                yield from self._subfolders(sub, seen)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a linked folder is searched, once
    except OSError:
        return False


def _found_for(arg: str, finder: _Finder) -> Iterator[Found | Problem]:
    path = Path(arg)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:  # e.g. a file inside an unsearchable folder
        yield Problem(arg, f"cannot access: {_reason(exc)}")
        return
    if st is None and GLOB_CHARS & set(arg):
        found = list(finder.glob(arg))
        yield from found
        if not any(isinstance(f, Found) for f in found):
            yield Problem(arg, "no image files match this pattern")
    elif st is None:
        yield Problem(arg, "no such file or folder")
    elif path.is_dir():
        found = list(finder.walk(path, path))
        yield from found
        if not any(isinstance(f, Found) for f in found) and not any(isinstance(f, Problem) for f in found):
            yield Problem(arg, f"no image files in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
    else:
        yield Found(path, Path(path.name))


def find_files(inputs: Iterable[str], out_dir: Path | None) -> list[Found | Problem]:
    """The files the arguments reach (each with its path relative to its folder or pattern) and the problems,
    in input order, before any decision about outputs; ``out_dir`` is never searched. ``plan_jobs`` and the
    store planner (``runtime.store_inputs``, for outputs that are URLs) both start here."""
    finder = _Finder(out_dir)
    return [item for arg in inputs for item in _found_for(arg, finder)]


def plan_jobs(inputs: Iterable[str], out_dir: str | os.PathLike,
              suffix: str | Callable[[Path], str]) -> list[Job | Problem]:  # fmt: skip
    """Files, folders (recursive, layout kept) and glob patterns -> jobs and problems, in input order.

    A file given by name becomes ``OUT_DIR/<name><suffix>``; files found in a folder or by a
    pattern keep their path relative to that folder (or the pattern's fixed leading folders).
    ``suffix`` may be a function of the source (a video's output suffix depends on its container).
    """
    out_dir = Path(out_dir)
    found = find_files(inputs, out_dir)
    sources = {f.source.resolve(): f.source for f in found if isinstance(f, Found)}
    out_real = out_dir.resolve()
    done: set[Path] = set()
    owners: dict[Path, Path] = {}  # resolved output -> its source
    plan: list[Job | Problem] = []
    for item in found:
        if isinstance(item, Problem):
            plan.append(item)
            continue
        real = item.source.resolve()
        if real in done:  # the same file reached again (a folder and a file in it, a symlink, ...)
            continue
        done.add(real)
        target = out_dir / item.relative.with_suffix(suffix if isinstance(suffix, str) else suffix(item.source))
        target_real = target.resolve()
        if target_real in sources:
            plan.append(Problem(str(item.source), f"its output {target} would replace the input "
                                f"{sources[target_real]}; not processed (the input is left as it is)"))
        elif not target_real.is_relative_to(out_real):
            plan.append(Problem(str(item.source), f"its output {target} would be written outside -o "
                                f"(to {target_real}, through a symlink); not processed"))
        elif target_real in owners:
            plan.append(Problem(str(item.source), f"its output {target} is also the output of "
                                f"{owners[target_real]}; rename one"))
        else:
            owners[target_real] = item.source
            plan.append(Job(item.source, target))
    return plan
