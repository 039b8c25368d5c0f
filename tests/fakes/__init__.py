"""Local gRPC stand-ins for Google APIs, started by tests on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc


@contextmanager
def serve_unary(service: str, method: str, handler: Callable[[Any, Any], Any], request_type: Any,
                response_type: Any) -> Iterator[str]:
    """Serve one unary method of a Google API (proto-plus request/response types) on a free local port;
    yields host:port for the client's insecure channel."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_unary_rpc_method_handler(handler, request_deserializer=request_type.deserialize,
                                                    response_serializer=response_type.serialize)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
