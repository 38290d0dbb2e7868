"""Run inside a subprocess that can import TensorRT's real Python bindings (over stub libraries).

Prints one JSON object describing the module: its public names, and for every public class its
members (kind, keyword names from pybind11's signatures), its enum members with their values and
its base classes. ``tests/real_tensorrt.py`` starts it; nothing here needs a GPU.

    python tests/tensorrt_introspect.py tensorrt_bindings > dump.json
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys

SIGNATURE = re.compile(r"^(?:\d+\. )?(\w+)\((.*)\)(?: -> .*)?$")


def keyword_names(function: object) -> list[list[str]]:
    """Parameter names of each overload, from pybind11's docstring or Python's own signature."""
    if inspect.isfunction(function):  # pure Python (the package's __init__.py)
        return [[p for p in inspect.signature(function).parameters if p != "self"]]
    overloads = []
    for line in (getattr(function, "__doc__", None) or "").splitlines():
        match = SIGNATURE.match(line.strip())
        if not match:
            continue
        names, depth, current = [], 0, ""
        for char in match.group(2) + ",":  # split on top-level commas only
            if char in "([{<":
                depth += 1
            elif char in ")]}>":
                depth -= 1
            if char == "," and depth == 0:
                name = current.split(":")[0].split("=")[0].strip().lstrip("*")
                if name and name != "self":
                    names.append(name)
                current = ""
            else:
                current += char
        overloads.append(names)
    return overloads


def returns(function: object) -> list[str]:
    """Return annotations of each overload in a pybind11 docstring."""
    found = []
    for line in (getattr(function, "__doc__", None) or "").splitlines():
        if SIGNATURE.match(line.strip()) and " -> " in line:
            found.append(line.rsplit(" -> ", 1)[1].strip())
    return found


def is_enum(cls: type) -> bool:
    return isinstance(getattr(cls, "__members__", None), dict) and hasattr(cls, "__int__")


def describe_class(cls: type) -> dict:
    if is_enum(cls):
        return {"enum": {name: int(value) for name, value in cls.__members__.items()}}
    members = {}
    for name, raw in vars_with_bases(cls).items():
        if name.startswith("_") and name not in ("__len__", "__getitem__", "__iter__", "__init__"):
            continue
        if isinstance(raw, property):
            members[name] = {"kind": "property", "settable": raw.fset is not None}
        elif isinstance(raw, type):
            members[name] = {"kind": "class", **describe_class(raw)}
        elif callable(raw):
            kind = "static" if isinstance(raw, staticmethod) else "method"
            function = raw.__func__ if isinstance(raw, staticmethod) else raw
            members[name] = {"kind": kind, "keywords": keyword_names(function), "returns": returns(function)}
        else:
            members[name] = {"kind": "value", "repr": repr(raw)[:80]}
    return {"members": members, "bases": [b.__name__ for b in cls.__mro__[1:]]}


def vars_with_bases(cls: type) -> dict:
    found = {}
    for klass in reversed(cls.__mro__[:-1]):  # object's own members are nobody's API
        if klass.__name__.startswith("pybind11_"):
            continue
        found.update(vars(klass))
    return found


def main(module_name: str) -> None:
    trt = importlib.import_module(module_name)
    classes, functions = {}, {}
    for name in dir(trt):
        if name.startswith("_"):
            continue
        value = getattr(trt, name)
        if inspect.isclass(value):
            classes[name] = describe_class(value)
        elif callable(value) and not inspect.ismodule(value):
            functions[name] = keyword_names(value)
    values = {
        name: repr(getattr(trt, name))
        for name in dir(trt)
        if not name.startswith("_") and name not in classes and name not in functions
    }
    json.dump({"version": trt.__version__, "classes": classes, "functions": functions, "values": values},
              sys.stdout, sort_keys=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tensorrt")
