"""Run the app under uvicorn as Cloud Run needs: a deadline on slow request headers, and a logged, bounded drain.

- uvicorn's HTTP protocols have no deadline on reading a request's headers: a client trickling one header byte
  at a time (slowloris) keeps its connection forever. ``DeadlineProtocol`` answers 408 and closes it once the
  request timeout passes, and 431 once its headers pass 16 KiB. (Bodies get the same deadline in the app, which
  can answer it as JSON.) Slow clients never block others either way: every connection is a coroutine on one
  event loop, not a worker.
- HTTP is parsed by httptools (C) on uvloop's event loop (uvicorn's loop="auto" takes it when installed): a
  lone predict here answered about 0.5 ms sooner than on h11 and asyncio's own loop, /health 0.3 ms
  (benchmarks/RESULTS.md, server section).
- The socket is bound before the model loads, so a busy port is one clear start-up error (``BindError``)
  instead of uvicorn's log line and exit 1 after the start-up work; the address is announced (``ready_message``)
  only once the server accepts requests, with the port it really bound (``--port 0`` picks a free one).
- On SIGTERM (Cloud Run sends it, then SIGKILL 10 s later) uvicorn stops accepting connections, closes
  idle ones and lets in-flight requests finish for up to ``--drain-seconds`` (8); the process then exits 0.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

KEEP_ALIVE_S = 620  # longer than Cloud Run's front end keeps idle connections (600 s)

log = logging.getLogger("inference_service")


MAX_HEADER_BYTES = 16 * 1024  # a request's line and headers, as uvicorn's h11 protocol allowed (httptools: no limit)


def _refusal(status: bytes, message: str) -> bytes:
    """A whole JSON error response that closes the connection, for answers given before the app runs."""
    body = json.dumps({"error": message, "field": None}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline from a request's first byte (a blank line before it too) to its
    last header byte, and at most ``MAX_HEADER_BYTES`` of request line and headers; a connection that never sends
    a byte is closed after the keep-alive timeout instead of never.

    The header phase is the parser's, not the response's: a request answered before its body arrived (401, 503)
    is still being read, and its body counts neither toward the next request's headers nor toward a 408. No
    deadline runs while a response is in flight (it starts when the response ends), so a 408 is never written into
    the middle of another answer."""

    header_timeout: float = 60.0
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0  # received since the last request's headers ended, in chunks that began outside a body
    _in_message = False  # the parser is inside a request: from its first byte to the end of its body
    _in_headers = False  # ...and before the end of its headers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's narrowing
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if not self._in_message:  # httptools skips blank lines before a request without a callback
            self._start_header_timer()
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._reading_headers and self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(b"431 Request Header Fields Too Large",
                         f"request headers are over the {MAX_HEADER_BYTES // 1024} KiB limit")

    @property
    def _reading_headers(self) -> bool:
        """Between requests (a next one may be starting) or inside one's request line and headers."""
        return self._in_headers or not self._in_message

    def on_message_begin(self) -> None:
        self._in_message = self._in_headers = True
        self._start_header_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_headers:  # a request pipelined behind the answer, its headers still coming
            self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._header_timer = self.loop.call_later(
                self.header_timeout, self._refuse, b"408 Request Timeout",
                f"request headers did not arrive within the {self.header_timeout:g} s request timeout")

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: bytes, message: str) -> None:
        """Answer ``status`` and close; only close if another answer is in flight (not writing into it)."""
        self._cancel_header_timer()
        if not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_refusal(status, message))
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, saying in the log that it is draining and how many requests it waits for, and
    printing ``ready_message`` once it listens."""

    ready_message: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]  # as bound: 0.0.0.0 is every address, not loopback
            log.info("listening on %s:%s", f"[{host}]" if ":" in host else host, port)  # uvicorn says nothing
            if self.ready_message:
                print(self.ready_message.replace("{url}", url_of(sockets[0])), flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("shutdown: draining %d in-flight request(s) for up to %s s; new connections are refused",
                 len(self.server_state.tasks), self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets)


class BindError(Exception):
    """The server cannot listen where it was asked to (port in use, address not on this machine, privileged)."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for ``serve``; raises ``BindError`` with a message for the operator."""
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on the connections of a socket that says it is TCP
    # (uvloop sets it on every TCP connection; asyncio's loop serves where uvloop is not installed).
    # Without it, a response's headers and body (two writes) met Nagle's algorithm and the client's delayed ACK: up
    # to 40 ms more per request on a keep-alive connection (a GET /health took 48 ms instead of 1.7 here).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a previous run's exit
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = "; another process listens there: stop it or pick another --port" if e.errno == errno.EADDRINUSE else ""
        raise BindError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The address a local client reaches ``sock`` at: loopback for a wildcard bind, the real port."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _exit_quietly(signum: int, _: FrameType | None) -> None:
    """SIGTERM is the platform's "stop": exit 0. SIGINT is Ctrl-C: 130, as a shell reports it, without
    KeyboardInterrupt's traceback through asyncio."""
    sys.exit(0 if signum == signal.SIGTERM else 128 + signum)


def serve(app: FastAPI, sock: socket.socket, request_timeout: float, drain_seconds: int,
          ready_message: str | None = None) -> None:
    """Serve on ``sock`` (from ``bind``) until SIGTERM/SIGINT, then drain for up to ``drain_seconds``; print
    ``ready_message`` with ``{url}`` replaced once listening. SIGTERM exits 0 whether it comes before, during or
    after serving (uvicorn re-raises it after draining; the default action would end the process "killed by
    SIGTERM", and as a container's PID 1 would ignore it during startup); Ctrl-C exits 130, quietly too."""
    signal.signal(signal.SIGTERM, _exit_quietly)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored (nohup, &)
        signal.signal(signal.SIGINT, _exit_quietly)
    protocol = type("Protocol", (DeadlineProtocol,), {"header_timeout": request_timeout})
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, http=protocol, log_config=None, access_log=False,
                            server_header=False, timeout_keep_alive=KEEP_ALIVE_S,
                            timeout_graceful_shutdown=drain_seconds)
    server = DrainingServer(config)
    server.ready_message = ready_message
    server.run(sockets=[sock])
