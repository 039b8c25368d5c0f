"""Hostile input against real loopback servers: every file of tests/corpus/, then malformed requests (content
types, non-UTF-8 bytes, bodies over the cap with and without a length, too many parts, repeated fields) and path
tricks on the shared server. Each answer is the JSON its table says; nothing is a 5xx; the servers keep serving.

tests/server/test_server_api.py checks the everyday mistakes in-process; this is the systematic list over real sockets.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import select
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.helpers_server import MULTIPART, ROOT, demo_model, multipart, run_server, write_key_file
from tests.server.test_shared_server import KEYS, layout, shared_args  # noqa: F401 (layout is a fixture)
from tests.server.test_shared_server import test_path_tricks_are_4xx_and_read_nothing_outside as check_path_trick

CORPUS = ROOT / "tests" / "corpus"
MANIFEST = yaml.safe_load((CORPUS / "manifest.yaml").read_text())
MAX_UPLOAD_MB = 2
CAP = MAX_UPLOAD_MB * 1024 * 1024
IMAGE = sorted((ROOT / "models" / "samples").glob("shapes-*"))[0].read_bytes()


@dataclass(frozen=True)
class Server:
    url: str
    auth: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One dedicated server for the module, with a 2 MB body cap so oversized bodies stay cheap to send."""
    tmp = tmp_path_factory.mktemp("hostile")
    key, key_file = write_key_file(tmp)
    args = ["--model", str(demo_model("e2e")), "--api-key-file", str(key_file), "--max-upload-mb",
            str(MAX_UPLOAD_MB), "--threads", "1"]
    with run_server(args, log_path=tmp / "server.log") as (url, _):
        yield Server(url, {"Authorization": f"Bearer {key}"}, tmp / "server.log")


@pytest.fixture(scope="module")
def shared(layout: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    log = tmp_path_factory.mktemp("hostile-shared") / "server.log"
    with run_server(shared_args(layout), log_path=log) as (url, _):
        yield Server(url, {"Authorization": f"Bearer {KEYS['acme']}"}, log)


def test_manifest_lists_every_corpus_file_and_the_corpus_stays_small() -> None:
    listed = {e["file"] for e in MANIFEST}
    on_disk = {p.name for p in CORPUS.iterdir()} - {"make_corpus.py", "manifest.yaml", "README.md"}
    assert listed == on_disk
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 300_000


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_corpus_file_gets_its_answer(server: Server, entry: dict) -> None:
    name = entry["file"]
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    r = httpx.post(f"{server.url}/predict", files={"file": (name, (CORPUS / name).read_bytes(), mime)},
                   headers=server.auth, timeout=30)
    assert (r.status_code, r.headers["content-type"]) == (entry["status"], "application/json"), r.text
    body = r.json()
    if entry["status"] == 200:
        assert body["images"][0]["shape"] == entry["shape"]
    else:
        assert body["field"] == entry["field"] and entry["error"] in body["error"], body


def part(name: bytes, content: bytes, filename: bytes | None = None) -> tuple[bytes, bytes | None, bytes]:
    return name, filename, content


FILE = part(b"file", IMAGE, b"s.jpg")


@dataclass(frozen=True)
class Bad:
    """A request body and the answer it must get: ``error`` is a substring; ``field`` None means a request-level
    problem (no single form field is to blame); status 200 means the hostile bytes are harmless and ignored."""

    body: bytes
    headers: dict[str, str]
    status: int
    field: str | None = None
    error: str = ""


REQUESTS = {
    "json": Bad(b'{"file": "/9j/4AAQ"}', {"Content-Type": "application/json"}, 422, "file", "missing image"),
    "text-plain": Bad(IMAGE, {"Content-Type": "text/plain"}, 422, "file", "missing image"),
    "no-content-type": Bad(IMAGE, {}, 422, "file", "missing image"),
    "urlencoded": Bad(b"conf=0.5", {"Content-Type": "application/x-www-form-urlencoded"}, 422, "file",
                      "missing image"),
    "urlencoded-file": Bad(b"file=%FF%D8%FF", {"Content-Type": "application/x-www-form-urlencoded"}, 422, "file",
                           "must be a file part"),
    # `curl --data-binary @image.jpg`: the raw image as a urlencoded body, its bytes read as fields of any number
    "raw-image-as-body": Bad(IMAGE, {"Content-Type": "application/x-www-form-urlencoded"}, 422, "file",
                             "missing image: the body is application/x-www-form-urlencoded with binary bytes, an image "
                             "sent raw (as curl --data-binary does); send the image as the multipart 'file' part"),
    "urlencoded-many-fields": Bad(b"&".join(b"a%d=1" % i for i in range(12)),
                                  {"Content-Type": "application/x-www-form-urlencoded"}, 422, "file",
                                  "A predict is a multipart/form-data form with the image as its 'file' part"),
    "small-raw-image-as-body": Bad(b"\xff\xd8\xff\xe0&&&abc", {"Content-Type": "application/x-www-form-urlencoded"},
                                   422, "file", "an image sent raw (as curl --data-binary does)"),
    "multipart-without-boundary": Bad(multipart([FILE]), {"Content-Type": "multipart/form-data"}, 400, None,
                                      "Missing boundary"),
    "multipart-wrong-boundary": Bad(multipart([FILE]), {"Content-Type": "multipart/form-data; boundary=other"},
                                    400, None, "Invalid multipart"),
    "multipart-garbage": Bad(b"\x00\xff" * 500, MULTIPART, 400, None, "Invalid multipart"),
    "non-utf8-value": Bad(multipart([FILE, part(b"conf", b"\xff\xfe0.5")]), MULTIPART, 422, "conf",
                          "must be a number"),
    "non-utf8-field-name": Bad(multipart([FILE, part(b"co\xffnf", b"0.5")]), MULTIPART, 422, "co\xffnf",
                               "unknown form field"),
    "non-utf8-file-part-name": Bad(multipart([part(b"fi\xffle", IMAGE, b"s.jpg")]), MULTIPART, 422, "fi\xffle",
                                   "unexpected file part"),
    "path-as-field-name": Bad(multipart([FILE, part(b"../../etc/passwd", b"1")]), MULTIPART, 422,
                              "../../etc/passwd", "unknown form field"),
    "too-many-fields": Bad(multipart([FILE] + [part(f"f{i}".encode(), b"1") for i in range(10)]), MULTIPART, 400,
                           None, "Too many fields"),
    "too-many-files": Bad(multipart([FILE] * 3), MULTIPART, 400, None, "Too many files"),
    "field-over-1mb": Bad(multipart([FILE, part(b"conf", b"0" * 1_100_000)]), MULTIPART, 400, None,
                          "exceeded maximum size"),
    "non-utf8-filename": Bad(multipart([part(b"file", IMAGE, b"\xff\xfe\x00.jpg")]), MULTIPART, 200),
    "part-type-lies": Bad(multipart([FILE]).replace(b'filename="s.jpg"', b'filename="s.exe"\r\nContent-Type: '
                                                    b"application/x-msdownload"), MULTIPART, 200),
}


@pytest.mark.parametrize("case", REQUESTS, ids=list(REQUESTS))
def test_malformed_request_gets_its_answer(server: Server, case: str) -> None:
    bad = REQUESTS[case]
    r = httpx.post(f"{server.url}/predict", content=bad.body, headers={**server.auth, **bad.headers}, timeout=30)
    assert (r.status_code, r.headers["content-type"]) == (bad.status, "application/json"), r.text
    body = r.json()
    if bad.status == 200:
        assert body["images"][0]["results"], "the image itself is fine: it is predicted"
    else:
        assert body["field"] == bad.field and bad.error in body["error"], body


def test_non_ascii_bytes_in_the_key_are_401(server: Server) -> None:
    r = httpx.post(f"{server.url}/predict", files={"file": IMAGE}, headers={"Authorization": b"Bearer \xff\xfe\x80"},
                   timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "invalid API key"


def test_traversal_in_the_filename_writes_nothing(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "written.jpg"
    filename = b"../" * 12 + str(target).lstrip("/").encode()
    r = httpx.post(f"{server.url}/predict", content=multipart([part(b"file", IMAGE, filename)]),
                   headers={**server.auth, **MULTIPART}, timeout=30)
    assert r.status_code == 200 and not target.exists() and filename.decode() not in r.text


@pytest.mark.parametrize("parts", [
    [FILE, part(b"conf", b"5"), part(b"conf", b"0.5")],
    [part(b"file", b"not an image", b"a.jpg"), FILE],
], ids=["conf-twice", "file-twice"])
def test_repeated_fields_are_refused(server: Server, parts: list) -> None:
    """Which of two values counts is a guess; an invalid value must never be silently dropped."""
    r = httpx.post(f"{server.url}/predict", content=multipart(parts), headers={**server.auth, **MULTIPART},
                   timeout=30)
    assert r.status_code == 422 and r.json()["field"] == parts[-1][0].decode()


def raw_post(url: str, headers: dict[str, str], chunks: Iterable[bytes]) -> tuple[int, dict]:
    """POST /predict over a bare socket, sending ``chunks`` until the server answers, as a streaming client does."""
    host, port = urlsplit(url).hostname or "", urlsplit(url).port or 80
    with socket.create_connection((host, port), timeout=30) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
        sock.sendall(f"POST /predict HTTP/1.1\r\n{head}\r\n".encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer has come: stop sending
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_declared_length_over_the_cap_is_413_before_the_body_is_sent(server: Server) -> None:
    status, body = raw_post(server.url, {**server.auth, **MULTIPART, "Content-Length": str(CAP + 1)}, [])
    assert status == 413 and body == {"error": f"request body is over the {MAX_UPLOAD_MB:g} MiB limit (MAX_UPLOAD_MB)",
                                      "field": "file"}


def test_chunked_body_over_the_cap_is_413_while_it_streams(server: Server) -> None:
    head = multipart([part(b"file", b"", b"big.jpg")]).split(b"\r\n\r\n")[0] + b"\r\n\r\n\xff\xd8\xff"
    block = b"\0" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(data), data) for data in [head] + [block] * (2 * CAP // len(block))]
    status, body = raw_post(server.url, {**server.auth, **MULTIPART, "Transfer-Encoding": "chunked"}, chunks)
    assert status == 413 and f" {MAX_UPLOAD_MB:g} MiB limit" in body["error"] and body["field"] == "file"


@pytest.mark.parametrize("path", [
    "/api/models/acme/shapes%2f..%2f..%2f..%2foutside/demo/predict",  # encoded slashes
    "/api/models/acme/..%5c..%5coutside/demo/predict",  # backslashes
    "/api/models/acme/%252e%252e/demo/predict",  # double-encoded dots
    "/api/models/acme/%c0%ae%c0%ae/demo/predict",  # overlong UTF-8 dots
    "/api/models/acme/%ef%bc%8e%ef%bc%8e/demo/predict",  # fullwidth dots
    "/api/models/..%2facme/shapes/demo/predict",  # owner climbing out
    "/api/models/acme/shapes/demo%0a/predict",  # a trailing newline
    "/api/models/acme/C:/demo/predict",  # a drive letter
    "/api/models/acme//demo/predict",  # an empty segment
    "/api/models/acme/shapes/" + "d" * 5000 + "/predict",  # a 5000-character name
])
def test_more_path_tricks_on_the_shared_server_are_4xx(shared: Server, path: str) -> None:
    check_path_trick(shared.url, IMAGE, path)


def test_no_5xx_no_traceback_and_still_serving(server: Server, shared: Server) -> None:
    """Last in the module: after all of the above, both servers logged no 5xx and no traceback, and predict."""
    assert httpx.post(f"{server.url}/predict", files={"file": IMAGE}, headers=server.auth, timeout=30).status_code \
        == 200
    r = httpx.post(f"{shared.url}/api/models/acme/shapes/demo/predict", files={"file": IMAGE}, headers=shared.auth,
                   timeout=30)
    assert r.status_code == 200 and r.json()["images"][0]["results"]
    for log in (server.log, shared.log):
        text = log.read_text()
        requests = [json.loads(line)["httpRequest"] for line in text.splitlines() if '"httpRequest"' in line]
        statuses = [r["status"] for r in requests if r["requestUrl"] != "/health"]  # 503 while loading is by design
        assert statuses and max(statuses) < 500
        assert "Traceback" not in text and "unhandled error" not in text
