"""INPUT arguments and ``-o`` where either may be a store URL -> jobs, with the local planner's rules.

All local (``file://`` URLs count as local): ``runtime.inputs.plan_jobs``, unchanged. Otherwise local
arguments are found by ``runtime.inputs.find_files`` and URL arguments by listing the store, and the same
rules decide the outputs:

- a URL naming an object is one input (``OUT/<name><suffix>``); a folder or key prefix is searched to any
  depth, keeping the layout; a pattern (``s3://b/in/**/*.jpg``) keeps paths relative to its fixed prefix;
  hidden names (a part starting with ``.``) are skipped in searches, and so is ``-o`` itself;
- each object becomes at most one job; two inputs with one output are a clash; an output that would replace
  an input, or land outside ``-o`` (a key with ``..`` in it, a symlink inside a local ``-o``), is a problem
  and its input is left alone;
- videos are cut from and into local files only (``runtime.video`` seeks in them): one line each otherwise;
- a listing that fails, a missing object or a protocol whose package is not installed is one line.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

from runtime import store
from runtime.errors import first_line
from runtime.inputs import CANDIDATE_SUFFIXES, GLOB_CHARS, Found, Job, Problem, find_files, plan_jobs
from runtime.io import IMAGE_SUFFIXES
from runtime.video import VIDEO_SUFFIXES, is_video

Suffix = Callable[[Path | str], str]


def plan(inputs: Iterable[str], out: str | os.PathLike, suffix: str | Suffix) -> list[Job | Problem]:
    """Jobs and problems, in input order, for arguments and an output that may be store URLs."""
    args = [str(store.location(a)) if store.is_store_url(a) and store.local_path(str(a)) else str(a) for a in inputs]
    target = store.location(out)
    if not any(store.is_store_url(a) for a in args) and isinstance(target, Path):
        return plan_jobs(args, target, suffix)  # type: ignore[arg-type]
    if isinstance(target, str):
        target = store.canonical(target)
    found: list[Found | Problem] = []
    for arg in args:
        if store.is_store_url(arg):
            found.extend(_found_in_store(arg, target if isinstance(target, str) else None))
        else:
            found.extend(find_files([arg], target if isinstance(target, Path) else None))
    return _assign(found, target, suffix)


def _assign(found: list[Found | Problem], out: Path | str, suffix: str | Suffix) -> list[Job | Problem]:
    """The output of each found file, with the checks of ``runtime.inputs.plan_jobs`` for this mix of places."""
    local_out = out.resolve() if isinstance(out, Path) else None
    inputs = {_identity(f.source) for f in found if isinstance(f, Found)}
    done: set[Path | str] = set()
    owners: dict[Path | str, Path | str] = {}  # output identity -> its source
    plan: list[Job | Problem] = []
    for item in found:
        if isinstance(item, Problem):
            plan.append(item)
            continue
        identity = _identity(item.source)
        if identity in done:  # the same file or object reached again
            continue
        done.add(identity)
        name = str(item.source)
        relative = PurePosixPath(Path(item.relative).as_posix())
        if isinstance(item.source, str) and relative.suffix.lower() in VIDEO_SUFFIXES:
            plan.append(Problem(name, "videos are cut from local files only (copy it to this machine first)"))
            continue
        if isinstance(out, str) and not isinstance(item.source, str) and is_video(name):
            plan.append(Problem(name, f"videos are written to local folders only, not to {out}"))
            continue
        ending = suffix if isinstance(suffix, str) else suffix(item.source)
        if ".." in relative.parts or relative.is_absolute() or not relative.name:
            plan.append(Problem(name, f"its name has no place below -o ({relative}); not processed"))
            continue
        relative = relative.with_suffix(ending)
        target: Path | str = store.join(out, relative) if isinstance(out, str) else out / relative
        target_id = _identity(target)
        if target_id in inputs:
            plan.append(Problem(name, f"its output {target} would replace an input of this run; not processed "
                                "(the input is left as it is)"))  # fmt: skip
        elif local_out is not None and not Path(target_id).is_relative_to(local_out):
            plan.append(Problem(name, f"its output {target} would be written outside -o (to {target_id}, "
                                "through a symlink); not processed"))  # fmt: skip
        elif target_id in owners:
            plan.append(Problem(name, f"its output {target} is also the output of {owners[target_id]}; rename one"))
        else:
            owners[target_id] = item.source
            plan.append(Job(item.source, target))
    return plan


def _identity(place: Path | str) -> Path | str:
    """What makes two names the same file: the resolved path, or the URL as the store spells it."""
    return place if isinstance(place, str) else place.resolve()


def _found_in_store(arg: str, out: str | None) -> Iterator[Found | Problem]:
    """The objects one URL argument reaches, with their paths relative to it, or one problem line."""
    try:
        if GLOB_CHARS & set(arg.split("://", 1)[1]):
            yield from _globbed(arg, out)
            return
        url = store.canonical(arg)
        what = store.kind(url)
        if what == "missing":
            yield Problem(arg, "no such object or folder")
        elif what == "file":
            yield Found(url, Path(posixpath.basename(url)))  # type: ignore[arg-type]
        else:
            found = list(_below(url, url, out))
            yield from found
            if not found:
                yield Problem(arg, f"no image files under this URL ({', '.join(sorted(IMAGE_SUFFIXES))})")
    except store.StoreError as exc:
        yield Problem(arg, str(exc).removeprefix(f"{arg}: "))
    except Exception as exc:  # noqa: BLE001 - a store's refusal (credentials, network) is one line for this argument
        yield Problem(arg, f"cannot list: {type(exc).__name__}: {first_line(exc)}")


def _below(folder: str, base: str, out: str | None) -> Iterator[Found]:
    """Candidate files below ``folder`` (hidden parts and ``-o`` skipped, unless ``-o`` is the folder named: its
    outputs would then replace its inputs, and the planner says so), relative to ``base``."""
    skip = out.rstrip("/") + "/" if out is not None and out != folder else None
    for url in store.walk(folder):
        if skip is not None and url.startswith(skip):
            continue
        relative = PurePosixPath(url[len(base.rstrip("/")) + 1 :])
        if any(part.startswith(".") for part in relative.parts):
            continue
        if relative.suffix.lower() in CANDIDATE_SUFFIXES:
            yield Found(url, Path(relative))  # type: ignore[arg-type]


def _globbed(pattern: str, out: str | None) -> Iterator[Found | Problem]:
    """Objects matching a pattern, relative to its fixed leading parts (normalised first, as local patterns)."""
    scheme, rest = pattern.split("://", 1)
    parts = PurePosixPath(posixpath.normpath(rest)).parts
    fixed = next((i for i, part in enumerate(parts) if GLOB_CHARS & set(part)), len(parts))
    base = store.canonical(f"{scheme}://{posixpath.join(*parts[:fixed])}" if fixed else f"{scheme}://")
    normalised = f"{scheme}://{posixpath.join(*parts)}"
    any_found = False
    for url, is_folder in store.glob(normalised):
        if is_folder:
            for item in _below(url, base, out):
                any_found = True
                yield item
            continue
        relative = PurePosixPath(url[len(base.rstrip("/")) + 1 :])
        if relative.suffix.lower() in CANDIDATE_SUFFIXES:
            any_found = True
            yield Found(url, Path(relative))  # type: ignore[arg-type]
    if not any_found:
        yield Problem(pattern, "no image files match this pattern")


__all__ = ["plan"]
