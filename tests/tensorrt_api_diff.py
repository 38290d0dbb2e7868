"""Where the fake ``tensorrt`` of ``fake_tensorrt`` and a real release's API dump disagree.

A dump is what ``tests/tensorrt_introspect.py`` prints for the real bindings. The fake may offer
less than the real module, never more or different: every class, method, property and enum
member it has must exist in the real release with the same kind, keyword names and value, and
every name it calls removed must really be absent.

    python tests/tensorrt_api_diff.py            # the differences for every release compared
"""

from __future__ import annotations

import enum
import inspect
import sys
from types import ModuleType
from typing import Any

from fake_tensorrt import FAKE_ONLY

CHECKED_DUNDERS = ("__len__",)  # the fake must not offer len() where the real one has none


def fake_members(cls: type) -> dict[str, Any]:
    """Public members a fake class offers (its own and inherited, minus plain ``object``'s)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):
        if klass.__module__ == "builtins" or klass.__name__ == "_Strict":
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") or name in CHECKED_DUNDERS:
                found[name] = value
    for builtin in cls.__mro__[1:]:  # len() inherited from a builtin (bytes, tuple) counts too
        if builtin.__module__ == "builtins" and builtin is not object and "__len__" in vars(builtin):
            found.setdefault("__len__", vars(builtin)["__len__"])
    return found


def _keywords(function: Any) -> list[str]:
    params = list(inspect.signature(function).parameters.values())
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _enum_differences(where: str, fake: type[enum.Enum], real: dict[str, int]) -> list[str]:
    problems = []
    fake_values = {name: member.value for name, member in fake.__members__.items()}  # aliases too
    for name, value in fake_values.items():
        if name not in real:
            problems.append(f"{where}.{name}: only in the fake")
        elif real[name] != value:
            problems.append(f"{where}.{name}: fake value {value}, real {real[name]}")
    problems += [f"{where}.{name}: missing from the fake (real value {v})" for name, v in real.items()
                 if name not in fake_values]  # fmt: skip
    if not hasattr(next(iter(fake)), "__int__"):
        problems.append(f"{where}: fake members are not int-convertible (real ones are)")
    return problems


def class_differences(where: str, fake: type, real: dict, removed: dict[str, str], major: int) -> list[str]:
    if "enum" in real:
        if not (isinstance(fake, type) and issubclass(fake, enum.Enum)):
            return [f"{where}: real is an enum, the fake's is not"]
        return _enum_differences(where, fake, real["enum"])
    problems = []
    members = real["members"]
    for name, value in fake_members(fake).items():
        path = f"{where}.{name}"
        entry = members.get(name)
        if entry is None:
            problems.append(f"{path}: only in the fake")
            continue
        if isinstance(value, property):
            if entry["kind"] != "property":
                problems.append(f"{path}: a property in the fake, a {entry['kind']} in the real module")
        elif isinstance(value, type):
            if entry["kind"] != "class":
                problems.append(f"{path}: a class in the fake, a {entry['kind']} in the real module")
            else:
                problems += class_differences(path, value, entry, {}, major)
        elif callable(value) and name not in CHECKED_DUNDERS:
            if entry["kind"] not in ("method", "static"):
                problems.append(f"{path}: a method in the fake, a {entry['kind']} in the real module")
            elif entry["keywords"] and _keywords(value) not in entry["keywords"]:
                problems.append(f"{path}: fake keywords {_keywords(value)}, real {entry['keywords']}")
    for name, why in removed.items():
        if int(why) <= major and name in members:
            problems.append(f"{where}.{name}: the fake says TensorRT {why} removed it, but {where}.{name} exists")
    return problems


def api_differences(fake: ModuleType, dump: dict) -> list[str]:
    """Every way the fake module disagrees with the real release ``dump`` describes."""
    major = int(dump["version"].split(".")[0])
    classes, functions, values = dump["classes"], dump["functions"], dump["values"]
    problems = []
    for name in sorted(vars(fake)):
        if name.startswith("_") or name in FAKE_ONLY:
            continue
        value = getattr(fake, name)
        where = f"tensorrt.{name}"
        if isinstance(value, type):
            if name not in classes:
                problems.append(f"{where}: only in the fake")
            else:
                problems += class_differences(where, value, classes[name], getattr(value, "_removed", {}), major)
        elif callable(value):
            if name not in functions:
                problems.append(f"{where}: only in the fake")
            elif functions[name] and _keywords(value) not in functions[name]:
                problems.append(f"{where}: fake keywords {_keywords(value)}, real {functions[name]}")
        elif name not in values:
            problems.append(f"{where}: only in the fake")
        elif repr(value) != values[name]:
            problems.append(f"{where}: fake {value!r}, real {values[name]}")
    return problems


def main() -> int:
    from fake_tensorrt import FakeCudaRuntime, make_tensorrt
    from real_tensorrt import RELEASES, real_tensorrt

    for release in RELEASES:
        problems = api_differences(make_tensorrt(release.version, FakeCudaRuntime()), real_tensorrt(release).dump())
        print(f"{release}: {len(problems)} differences")
        for problem in problems:
            print(f"  {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
