"""Read an ONNX file's ``metadata_props`` without the ``onnx`` package or ONNX Runtime.

Backends that are not ONNX Runtime (OpenVINO) still need the artifact's preprocessing metadata, and
OpenVINO's ONNX reader drops it. ``ModelProto.metadata_props`` is field 14, a repeated message of
two strings (key = 1, value = 2); every other top-level field is skipped by seeking over it, so a
176 MB graph is not read into memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

METADATA_PROPS_FIELD = 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class OnnxPropsError(ValueError):
    """The file is not a well-formed ONNX protobuf (the message names the file)."""


def _varint(read: BinaryIO, where: Path) -> int | None:
    """The next varint, or None at a clean end of file."""
    value, shift = 0, 0
    while True:
        byte = read.read(1)
        if not byte:
            if shift:
                raise OnnxPropsError(f"{where}: truncated ONNX file (inside a field header)")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise OnnxPropsError(f"{where}: not an ONNX file (malformed protobuf varint)")


def _entry(data: bytes, where: Path) -> tuple[str, str]:
    """A StringStringEntryProto (key = 1, value = 2) from its bytes."""
    fields = {1: "", 2: ""}
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        number, wire = tag >> 3, tag & 7
        if wire != _LENGTH or number not in fields:
            raise OnnxPropsError(f"{where}: malformed metadata entry in the ONNX file")
        length, shift = 0, 0
        while True:
            if pos >= len(data):
                raise OnnxPropsError(f"{where}: truncated metadata entry in the ONNX file")
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        fields[number] = data[pos : pos + length].decode("utf-8", errors="replace")
        pos += length
    return fields[1], fields[2]


def read_onnx_props(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of the ONNX file ``path`` as a dict; OnnxPropsError if it is not ONNX."""
    path = Path(path)
    size = path.stat().st_size
    props: dict[str, str] = {}
    with path.open("rb") as fh:
        while (tag := _varint(fh, path)) is not None:
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise OnnxPropsError(f"{path}: not an ONNX file (field number 0)")
            if wire == _VARINT:
                _varint(fh, path)
                continue
            if wire in (_FIXED64, _FIXED32):
                fh.seek(8 if wire == _FIXED64 else 4, os.SEEK_CUR)
                continue
            if wire != _LENGTH:
                raise OnnxPropsError(f"{path}: not an ONNX file (protobuf wire type {wire})")
            length = _varint(fh, path)
            if length is None or fh.tell() + length > size:
                raise OnnxPropsError(f"{path}: truncated ONNX file (a field runs past the end)")
            if number == METADATA_PROPS_FIELD:
                key, value = _entry(fh.read(length), path)
                props[key] = value
            else:
                fh.seek(length, os.SEEK_CUR)
    return props
