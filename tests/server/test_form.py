"""inference_service/form.py against Starlette's parser: whatever body the fast parse accepts, it reads into the
parts Starlette's parser gives; what real clients send takes the fast parse; everything else is left to Starlette."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st
from python_multipart.multipart import parse_options_header
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from inference_service.form import MAX_TEXT_BYTES, Part, plain_form
from inference_service.params import FIELDS
from inference_service.predict_service import MAX_FILES
from tests.helpers_server import MULTIPART, multipart

IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3 + b"\r\n\r\n--x\r\n"


def starlette_parts(content_type: str, body: bytes) -> list[Part] | None:
    """The parts Starlette's parser reads (files as bytes), or None where it refuses the body."""
    async def parse() -> list[Part] | None:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
                 "headers": [(b"content-type", content_type.encode("latin-1"))]}
        try:
            form = await Request(scope, receive).form(max_files=MAX_FILES, max_fields=len(FIELDS))
        except MultiPartException:
            return None
        return [(k, v if isinstance(v, str) else await v.read()) for k, v in form.multi_items()]
    return asyncio.run(parse())


def both(content_type: str, body: bytes) -> tuple[list[Part] | None, list[Part] | None]:
    return plain_form(content_type, body, MAX_FILES, len(FIELDS)), starlette_parts(content_type, body)


CLIENT_BODIES = {
    "tests' multipart()": lambda: (MULTIPART["Content-Type"], multipart([(b"file", b"s.jpg", IMAGE)])),
    "httpx": lambda: (lambda r: (r.headers["content-type"], r.read()))(httpx.Request(
        "POST", "http://x/predict", files={"file": ("bus.jpg", IMAGE, "image/jpeg")},
        data={"conf": "0.5", "imgsz": "320"})),
    "requests (the official client)": lambda: (lambda r: (r.headers["Content-Type"], r.body))(requests.Request(
        "POST", "http://x/predict", files={"file": ("bus.jpg", IMAGE)}, data={"iou": "0.6"}).prepare()),
    "curl -F": lambda: ("multipart/form-data; boundary=------------------------d74496d66958873e", (
        b'--------------------------d74496d66958873e\r\nContent-Disposition: form-data; name="file"; '
        b'filename="bus.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + IMAGE +
        b'\r\n--------------------------d74496d66958873e\r\nContent-Disposition: form-data; name="conf"\r\n\r\n'
        b'0.25\r\n--------------------------d74496d66958873e--\r\n')),
}


@pytest.mark.parametrize("client", CLIENT_BODIES)
def test_what_clients_send_takes_the_fast_parse_and_reads_as_starlette_reads_it(client: str) -> None:
    fast, reference = both(*CLIENT_BODIES[client]())
    assert fast is not None, "a plain body must not need Starlette's parser"
    assert fast == reference
    assert dict(fast)["file"] == IMAGE


PART_LOOKALIKE = b'\r\nContent-Disposition: form-data; name="x"\r\n\r\nz'  # data that reads like a part
NAMES = st.sampled_from(["file", "conf", "iou", "imgsz", "x", "a\"b", "fi\u00e9le", "a b", "", "file"])
DATA = st.one_of(st.binary(max_size=64),
                 st.sampled_from([b"0.5", b"", b"\r\n\r\n", b"--", b"\r\n-", "\u00e9".encode()]),
                 st.just(b"a" * (MAX_TEXT_BYTES + 1)))


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """Multipart bodies around the plain shape: half of them plain (any names, filenames and data, the data
    holding the delimiter too), the others with one odd thing or more: odd headers, spacing, dispositions,
    preambles, epilogues, a missing end, a charset or another parameter."""
    odd = draw(st.booleans())

    def pick(plain: object, *others: object) -> object:
        return draw(st.sampled_from([plain, *others])) if odd and draw(st.integers(0, 3)) == 0 else plain

    boundary = draw(st.sampled_from(["b0undary", "x", "------abc", "a b", "a: b"]))
    quoted = draw(st.booleans()) or " " in boundary
    content_type = f'multipart/form-data; boundary={chr(34) + boundary + chr(34) if quoted else boundary}'
    content_type += pick("", "; charset=utf-8", "; charset=latin-1", "; x=1")
    dash = b"--" + boundary.encode()
    body = pick(b"", b"\r\n", b"preamble\r\n")
    for _ in range(draw(st.integers(0, 4))):
        name = draw(NAMES).encode()
        filename = draw(st.sampled_from([None, b"s.jpg", b"", b"a\\\"b.jpg"]))
        disposition = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename is not None
                                                             else b"")
        disposition = pick(disposition, disposition.replace(b"; ", b";"), b"form-data; name=" + name,
                           b'attachment; name="x"', disposition + b"; filename*=utf-8''x.jpg",
                           b'form-data; filename="s.jpg"', disposition + b"; size=3")
        header_name = draw(st.sampled_from([b"Content-Disposition", b"content-disposition", b"CONTENT-DISPOSITION"]))
        lines = [header_name + pick(b": ", b":", b":  ", b": \t") + disposition]
        lines += draw(st.sampled_from([[], [b"Content-Type: image/jpeg"]]))
        lines += pick([], [b"X-Odd:value"], [b"Bad Header: x"], [header_name + b': form-data; name="conf"'], [b""])
        delimiter_in_data = (draw(st.sampled_from([b"x\r\n", b""])) + dash
                             + draw(st.sampled_from([b"y", b"\r\n", b"--", PART_LOOKALIKE])))
        data = draw(st.one_of(DATA, st.just(IMAGE), st.just(delimiter_in_data)))
        body += dash + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + data + b"\r\n"
    body += dash + pick(b"--", b"--\r\n", b"--\r\nepilogue", b"", b"\r\n")
    return content_type, body


@settings(max_examples=400, deadline=None)
@given(bodies())
@example(("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
          b"filename=\"s.jpg\"\r\n\r\n\r\n--b\r\n--b--"))
def test_a_body_the_fast_parse_accepts_reads_as_starlette_reads_it(body: tuple[str, bytes]) -> None:
    fast, reference = both(*body)
    if fast is not None:
        assert fast == reference


def test_only_form_data_with_just_a_boundary_takes_the_fast_parse() -> None:
    body = multipart([(b"file", b"s.jpg", IMAGE)])
    boundary = parse_options_header(MULTIPART["Content-Type"])[1][b"boundary"].decode()
    assert plain_form(f"multipart/form-data; boundary={boundary}", body, MAX_FILES, len(FIELDS)) is not None
    for content_type in ("", "application/x-www-form-urlencoded", "multipart/form-data",
                         f"multipart/form-data; boundary={boundary}; charset=latin-1",
                         f"multipart/mixed; boundary={boundary}", "multipart/form-data; boundary="):
        assert plain_form(content_type, body, MAX_FILES, len(FIELDS)) is None, content_type


def test_a_form_at_every_limit_takes_the_fast_parse() -> None:
    """As many files and fields as the form takes, a text field of the largest size Starlette's parser takes and a
    file part larger than that: all read by the fast parse, as Starlette reads them."""
    parts = [(b"file", b"s.jpg", IMAGE), (b"file", b"t.jpg", b"\xff" * (MAX_TEXT_BYTES + 1)),
             (b"conf", None, b"0" * MAX_TEXT_BYTES)] + [(f"f{i}".encode(), None, b"1") for i in range(len(FIELDS) - 1)]
    fast, reference = both(MULTIPART["Content-Type"], multipart(parts))
    assert fast is not None and fast == reference
    assert [name for name, _ in fast].count("file") == MAX_FILES and len(fast) == MAX_FILES + len(FIELDS)


def test_limits_leave_the_body_to_starlette_which_refuses_it() -> None:
    """More files or fields than the form takes, or a text field over Starlette's cap: its own error."""
    too_many_files = multipart([(b"file", b"s.jpg", IMAGE)] * (MAX_FILES + 1))
    too_many_fields = multipart([(f"f{i}".encode(), None, b"1") for i in range(len(FIELDS) + 1)])
    too_long = multipart([(b"file", b"s.jpg", IMAGE), (b"conf", None, b"0" * (MAX_TEXT_BYTES + 1))])
    for body in (too_many_files, too_many_fields, too_long):
        fast, reference = both(MULTIPART["Content-Type"], body)
        assert fast is None and reference is None
