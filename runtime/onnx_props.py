"""Read (and append to) an ONNX file's ``metadata_props`` without the ``onnx`` package or ONNX Runtime.

Backends that are not ONNX Runtime (OpenVINO) still need the artifact's preprocessing metadata, and
OpenVINO's ONNX reader drops it. ``ModelProto.metadata_props`` is field 14, a repeated message of
two strings (key = 1, value = 2); every other top-level field is skipped by seeking over it, so a
176 MB graph is not read into memory. ``encode_props`` is the other direction: protobuf concatenates
repeated fields wherever they appear, so its bytes appended to a model add those entries
(``export.fetch`` stamps downloaded files this way, on the base install).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

METADATA_PROPS_FIELD = 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
LENGTH_DELIMITED = _LENGTH  # the wire type of strings and nested messages


class OnnxPropsError(ValueError):
    """The file is not a well-formed ONNX protobuf (the message names the file)."""


class Field(NamedTuple):
    """One protobuf field in a file: its number and wire type, where its tag starts, where its value
    starts and where it ends (for a varint or fixed field the value is ``value``, else None)."""

    number: int
    wire: int
    start: int
    payload: int
    end: int
    value: int | None = None


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


def iter_fields(fh: BinaryIO, where: str | os.PathLike, end: int) -> Iterator[Field]:
    """The fields of the message from ``fh``'s position up to offset ``end`` (a whole file: its size;
    a nested message: its ``Field.end``). Values are not read: the caller seeks to ``payload`` for
    the ones it wants, and the next step seeks past them. OnnxPropsError for malformed protobuf."""
    where = Path(where)
    while fh.tell() < end:
        start = fh.tell()
        tag = _varint(fh, where)
        if tag is None:
            return
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise OnnxPropsError(f"{where}: not an ONNX file (field number 0)")
        value = None
        if wire == _VARINT:
            value = _varint(fh, where)
            if value is None:
                raise OnnxPropsError(f"{where}: truncated ONNX file (inside a field)")
            payload = stop = fh.tell()
        elif wire in (_FIXED64, _FIXED32):
            payload = fh.tell()
            stop = payload + (8 if wire == _FIXED64 else 4)
        elif wire == _LENGTH:
            length = _varint(fh, where)
            payload = fh.tell()
            if length is None or payload + length > end:
                raise OnnxPropsError(f"{where}: truncated ONNX file (a field runs past the end)")
            stop = payload + length
        else:
            raise OnnxPropsError(f"{where}: not an ONNX file (protobuf wire type {wire})")
        yield Field(number, wire, start, payload, stop, value)
        fh.seek(stop)


def message_fields(data: bytes, where: str | os.PathLike) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a small message held in memory: ints for varint fields, bytes for
    length-delimited ones (fixed-width fields are skipped)."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= len(data):
                raise OnnxPropsError(f"{where}: truncated message in the ONNX file")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise OnnxPropsError(f"{where}: malformed protobuf varint in the ONNX file")

    while pos < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            yield number, varint()
        elif wire == _LENGTH:
            length = varint()
            if pos + length > len(data):
                raise OnnxPropsError(f"{where}: truncated message in the ONNX file")
            yield number, data[pos : pos + length]
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
        else:
            raise OnnxPropsError(f"{where}: malformed message in the ONNX file (wire type {wire})")


def _entry(data: bytes, where: Path) -> tuple[str, str]:
    """A StringStringEntryProto (key = 1, value = 2) from its bytes."""
    fields = {1: "", 2: ""}
    for number, value in message_fields(data, where):
        if number not in fields or not isinstance(value, bytes):
            raise OnnxPropsError(f"{where}: malformed metadata entry in the ONNX file")
        fields[number] = value.decode("utf-8", errors="replace")
    return fields[1], fields[2]


def read_onnx_props(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of the ONNX file ``path`` as a dict; OnnxPropsError if it is not ONNX."""
    path = Path(path)
    props: dict[str, str] = {}
    with path.open("rb") as fh:
        for field in iter_fields(fh, path, path.stat().st_size):
            if field.number == METADATA_PROPS_FIELD and field.wire == _LENGTH:
                fh.seek(field.payload)
                key, value = _entry(fh.read(field.end - field.payload), path)
                props[key] = value
    return props


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH) + _encode_varint(len(payload)) + payload


def encode_props(props: Mapping[str, str]) -> bytes:
    """``metadata_props`` entries as ModelProto bytes, in key order: appended to an ONNX file (that has
    none of these keys yet) they add ``props`` to it."""
    out = bytearray()
    for key, value in sorted(props.items()):
        entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, value.encode("utf-8"))
        out += _length_delimited(METADATA_PROPS_FIELD, entry)
    return bytes(out)
