"""The predict form's parts from a multipart/form-data body already read: a strict parse of the plain shape that
clients send (the official client, requests, curl, the Test page), or None for anything else.

Starlette's parser (python-multipart, a state machine fed through callbacks, and a spooled file) reads bus.jpg's
form in 0.07 ms back to back, this in 0.03 (a few ``find`` calls and one copy of the image bytes); in the server,
body to parts went from 0.26 to 0.17 ms of the event loop's time per predict. It accepts only
bodies it reads the way Starlette's parser does, and says None for every other body (a preamble, a charset, an
odd header line, a text field over 1 MB, too many parts, non-UTF-8 names or text), which then goes to Starlette's
parser: odd and bad bodies keep getting its answers and its errors. tests/server/test_form.py holds the two to
the same parts on generated bodies.
"""

from __future__ import annotations

import re

from python_multipart.multipart import parse_options_header
from starlette.formparsers import MultiPartParser

MAX_TEXT_BYTES = MultiPartParser.max_part_size  # Starlette's cap on a text field (1 MB): over it, its error
# One header line as python-multipart reads it: a token name, a colon, at most one space, then the value.
_HEADER = re.compile(rb"([A-Za-z0-9-]+): ?([^ \r\n][^\r\n]*)")

Part = tuple[str, str | bytes]  # (name, text) for a field, (name, bytes) for a file part


def plain_form(content_type: str, body: bytes, max_files: int, max_fields: int) -> list[Part] | None:
    """The parts of ``body`` in order, or None when Starlette's parser must read it. A part with a filename is a
    file part (its bytes), one without is a text field (UTF-8); at most ``max_files`` and ``max_fields``."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary or len(params) != 1:
        return None
    delimiter = b"\r\n--" + boundary
    if not body.startswith(delimiter[2:] + b"\r\n"):
        return None
    parts: list[Part] = []
    files = fields = 0
    start = len(delimiter)
    while True:
        headers_end = body.find(b"\r\n\r\n", start)
        end = body.find(delimiter, headers_end + 4)
        options = _disposition(body[start:headers_end]) if 0 <= headers_end < end else None
        if options is None:
            return None
        data = body[headers_end + 4 : end]
        try:
            name = options[b"name"].decode()
            if b"filename" in options:
                files += 1
                parts.append((name, data))
            else:
                fields += 1
                parts.append((name, data.decode()))
        except UnicodeDecodeError:  # Starlette falls back to latin-1
            return None
        if files > max_files or fields > max_fields or (b"filename" not in options and len(data) > MAX_TEXT_BYTES):
            return None
        after = body[end + len(delimiter) : end + len(delimiter) + 2]
        if after == b"--":  # the close delimiter: python-multipart ignores whatever follows, and so does this
            return parts
        if after != b"\r\n":
            return None
        start = end + len(delimiter) + 2


def _disposition(headers: bytes) -> dict[bytes, bytes] | None:
    """The Content-Disposition options of a part's header block, which must name the part (Starlette reads only
    its name and filename, whatever the type); None for any other block (no or two dispositions, no name, a line
    python-multipart might read otherwise)."""
    disposition = None
    for line in headers.split(b"\r\n"):
        header = _HEADER.fullmatch(line)
        if header is None:
            return None
        if header[1].lower() == b"content-disposition":
            if disposition is not None:
                return None
            disposition = header[2]
    if disposition is None:
        return None
    options = parse_options_header(disposition)[1]
    return options if b"name" in options else None
