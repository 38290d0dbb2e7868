"""``multipart/form-data`` bodies (``curl -F file=@photo.jpg``, a browser's ``FormData``), parsed in memory.

The body has already been read whole and its size checked against the limit, so the parts are kept as
bytes (no spooling to temporary files). python-multipart does the parsing; this module only says which
fields the endpoint takes and turns every malformed body into one ``FormError`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from runtime.errors import first_line

MAX_PARTS = 8


class FormError(ValueError):
    """A multipart body the endpoint cannot use; the message is one line."""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise FormError(f"form field {self.name!r} is not UTF-8 text") from None


def is_multipart(content_type: str) -> bool:
    return parse_options_header(content_type)[0] == b"multipart/form-data"


def parse_form(body: bytes | bytearray, content_type: str, fields: tuple[str, ...]) -> dict[str, Part]:
    """The parts of a ``multipart/form-data`` body by field name; FormError for a malformed body, a field
    not in ``fields``, a field given twice or more than ``MAX_PARTS`` parts."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormError("multipart/form-data without a boundary parameter")
    parts: dict[str, Part] = {}
    state: dict[str, object] = {"ended": False}
    header_name, header_value = bytearray(), bytearray()
    headers: dict[str, str] = {}
    current: list[Part] = []

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_name.decode("latin-1").strip().lower()] = header_value.decode("latin-1").strip()
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise FormError("a form part has no Content-Disposition: form-data; name=...")
        if name not in fields:
            raise FormError(f"unknown form field {name!r}; this endpoint takes {', '.join(fields)}")
        if name in parts or any(p.name == name for p in current):
            raise FormError(f"form field {name!r} given twice")
        if len(parts) >= MAX_PARTS:
            raise FormError(f"more than {MAX_PARTS} form parts")
        filename = options.get(b"filename")
        current.append(Part(name, filename.decode("utf-8", "replace") if filename is not None else None,
                            headers.get("content-type", "")))  # fmt: skip

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current[-1].data.extend(data[start:end])

    def on_part_end() -> None:
        part = current.pop()
        parts[part.name] = part

    def on_end() -> None:
        state["ended"] = True

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
                 "on_part_end": on_part_end, "on_end": on_end}  # fmt: skip
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)  # type: ignore[arg-type]
        parser.finalize()
    except FormError:
        raise
    except (ValueError, IndexError) as exc:  # python-multipart's errors are ValueErrors
        raise FormError(f"malformed multipart body: {first_line(exc)}") from None
    if not state["ended"]:
        raise FormError("multipart body ends before its closing boundary")
    return parts
