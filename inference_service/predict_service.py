"""The predict pipeline behind every predict route, dedicated or shared: admission, the body within the request
timeout, the form's fields, then the CPU work in one hop to a worker thread, answered in the wire format.

A lone predict on an idle server skips the hop: its CPU work runs on the event loop itself, which would only
wait for the worker. The hop wakes a thread each way, and on a small instance that cost a lone predict 0.5-0.8 ms
at the median (benchmarks/RESULTS.md, server section). The loop is blocked meanwhile (health probes and new
arrivals wait, and the 504 below cannot interrupt the work), so only a short predict runs there: its model's
last inference, scaled to the size this request asks, took at most ``INLINE_MAX_INFERENCE_S`` (and a tenth of the
request timeout), and its image has at most ``INLINE_MAX_PIXELS`` (the header is read first, on the loop). And
only on an idle server: no other predict ran in the last ``INLINE_QUIET_S`` (another client's request may have
arrived while the previous predict ran and wait unread: it must not queue behind this one with its decode undone),
and no timed-out predict's inference still runs (the loop would wait for its turn). Under load every predict
hops, so requests decode while others infer.

Capacity (admission.py): beyond ``max_concurrency`` predicts running, a predict waits for a turn while its
expected wait is within ``max_wait_seconds`` (and fewer than ``max_queue`` wait), and is otherwise refused at once
with 503 and Retry-After. Every predict answers within ``request_timeout``: 408 if its body has not arrived by then
(the client's slowness), 504 if its result is not ready (the server's); but a predict on the event loop answers
when its work ends, which takes a model stalling to ten times its usual time or more to pass the timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from inference_service.admission import Admission, AtCapacity
from inference_service.decode import OpenedImage, open_image
from inference_service.errors import InputError
from inference_service.form import Part, plain_form
from inference_service.lanes import InferenceGate
from inference_service.model import Model, cpu_count
from inference_service.params import FIELDS, PredictParams, parse_params
from inference_service.placement import on_one_cpu
from inference_service.telemetry import Metrics
from inference_service.wire import predict_body, summarize

if TYPE_CHECKING:
    from inference_service.settings import ServerSettings as Settings

MAX_FILES = 2  # one more than the form takes: a second image gets "given more than once", a third "Too many files"
INLINE_MAX_INFERENCE_S = 0.05  # a predict runs on the event loop only if its inference should take at most this,
INLINE_MAX_PIXELS = 4_000_000  # its image has at most this many pixels (a 4 MP JPEG decodes in about 10 ms here),
INLINE_QUIET_S = 0.01  # and no predict ended in this long: other clients' requests read after one start sooner
URLENCODED = "application/x-www-form-urlencoded"  # curl's type for --data-binary: a form of ASCII text, never an image


class CpuWork:
    """The CPU-bound part of one predict, run whole in one worker thread (on the event loop for a lone predict on
    an idle server, see the module docstring): decode, letterbox, inference (at most the gate's turn, so other
    requests decode meanwhile), postprocess. One hop off the event loop instead of one per stage: on a small
    instance each thread wake-up costs a noticeable fraction of a ms. A lone request's work runs on one CPU
    (placement.py), its letterbox on the next while the JPEG decodes (letterbox.preprocess_upload)."""

    def __init__(self, gate: InferenceGate) -> None:
        self.gate = gate
        self._lock = threading.Lock()
        self._busy = 0

    def idle(self) -> bool:
        """No CPU work in any thread, not even an inference a timed-out predict left running."""
        return self._busy == 0

    def run(self, model: Model, upload: OpenedImage, params: PredictParams,
            deadline: float) -> tuple[tuple[int, int], list[dict[str, Any]], dict[str, float]]:
        """(image height and width, summarized results, stage timings in ms). Skips inference if ``deadline`` (a
        ``time.monotonic`` value: the event loop's clock) passed while it waited: its client has had a 504."""
        with self._lock:
            self._busy += 1
            alone = self._busy == 1
        try:
            with on_one_cpu(alone) as spare_cpu:
                t0 = time.perf_counter()
                tensor, lb = model.preprocess(upload, params.imgsz or model.info.imgsz, spare_cpu)
                t1 = time.perf_counter()
                with self.gate.turn(alone=self._busy == 1) as lane:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    t2 = time.perf_counter()
                    outputs = model.infer(tensor, lane=lane)
                    t3 = time.perf_counter()
                det = model.postprocess(outputs, lb, params.conf, params.iou)
                results = summarize(det, model.info.names, lb.orig_shape, params.normalize, params.decimals)
                t4 = time.perf_counter()
        finally:
            with self._lock:
                self._busy -= 1
        timings = {"preprocess": (t1 - t0) * 1000, "inference": (t3 - t2) * 1000, "postprocess": (t4 - t3) * 1000}
        return lb.orig_shape, results, timings


class PredictService:
    """Runs one predict of a given model from its HTTP request: ``handle``. Holds what all predicts share: the
    worker threads, the inference gate (inside ``CpuWork``) and admission."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        gate = settings.gate()
        # Each predict's CPU work runs in one hop to these threads (a hop is a thread wake-up each way): as many as
        # CPUs, so one request decodes while another infers, and at least one more than the concurrent inferences.
        # Long-lived threads, so freed buffers are reused from the same few malloc arenas and RSS settles instead of
        # creeping up per new thread.
        self.workers = ThreadPoolExecutor(
            max_workers=min(settings.max_concurrency, max(cpu_count(), gate.tokens + 1)), thread_name_prefix="predict")
        self.cpu_work = CpuWork(gate)
        self.admission = Admission(settings.max_concurrency, settings.max_queue, settings.max_wait_seconds,
                                   metrics.registry)
        self.metrics = metrics
        self.request_timeout = settings.request_timeout
        self.max_imgsz = settings.max_imgsz
        self.max_pixels = settings.max_pixels

    def close(self) -> None:
        """Drop predicts not yet started; those running finish in their threads."""
        self.workers.shutdown(wait=False, cancel_futures=True)

    async def handle(self, request: Request, model: Model) -> JSONResponse:
        """Read the multipart form and run ``model`` on it: the body of every predict route, shared mode's too."""
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.request_timeout
        data, fields = split_form(await self._read_form(request, deadline))
        params = parse_params(fields, model.info, self.max_imgsz)
        if data is None:
            raise InputError("missing image: send it as the multipart 'file' part", "file")
        try:
            async with asyncio.timeout_at(deadline), self.admission.slot():
                return await self._run(model, data, params, started, deadline)
        except AtCapacity as e:
            raise at_capacity(e) from None
        except TimeoutError:  # an inference already running finishes in its thread; one not yet started is dropped
            raise HTTPException(504, f"no result within the {self.request_timeout:g} s request timeout: the "
                                "server is busier than it can answer in time; retry later") from None

    async def _read_form(self, request: Request, deadline: float) -> list[Part]:
        """The form's parts: the body read within the request timeout, then parsed by ``plain_form``, or by
        Starlette's parser (its answers and errors) when the body is anything but plain. The body is read from
        the stream, not cached on ``request``: once parsed, only the parts stay in memory."""
        try:
            self.admission.refuse_if_full()  # before reading the body too: shedding must stay cheap when it matters
            async with asyncio.timeout_at(deadline):
                body = b"".join([chunk async for chunk in request.stream()])
        except AtCapacity as e:
            raise at_capacity(e) from None
        except TimeoutError:  # the rest of the body may still trickle in: close rather than read it
            raise HTTPException(408, f"the request body did not arrive within the {self.request_timeout:g} s "
                                "request timeout", headers={"Connection": "close"}) from None
        content_type = request.headers.get("content-type", "")
        urlencoded = content_type.split(";")[0].strip().lower() == URLENCODED
        if urlencoded and not body.isascii():
            raise InputError(f"missing image: the body is {URLENCODED} with binary bytes, an image sent raw (as curl "
                             "--data-binary does); send the image as the multipart 'file' part (curl -F "
                             "file=@image.jpg)", "file")
        parts = plain_form(content_type, body, MAX_FILES, len(FIELDS))
        if parts is None:
            try:
                form = await Request(request.scope, replay(body)).form(max_files=MAX_FILES, max_fields=len(FIELDS))
            except HTTPException as e:  # a urlencoded form of more fields than the predict has: none is an image
                if not urlencoded:
                    raise
                raise InputError(f"missing image: {e.detail} A predict is a multipart/form-data form with the image "
                                 "as its 'file' part (curl -F file=@image.jpg)", "file") from None
            try:
                parts = [(key, value if isinstance(value, str) else await value.read())
                         for key, value in form.multi_items()]
            finally:
                await form.close()  # its spooled files (on disk past 1 MB)
        return parts

    async def _run(self, model: Model, data: bytes, params: PredictParams, started: float,
                   deadline: float) -> JSONResponse:
        upload = open_image(data, self.max_pixels)  # the header: a bad or oversized image is refused before any work
        imgsz = params.imgsz or model.info.imgsz
        if self._runs_on_loop(model, upload, imgsz):
            shape, results, timings = self.cpu_work.run(model, upload, params, deadline)
        else:
            shape, results, timings = await asyncio.get_running_loop().run_in_executor(
                self.workers, self.cpu_work.run, model, upload, params, deadline)
        model.last_inference_ms, model.last_imgsz = timings["inference"], imgsz
        for stage, ms in timings.items():
            self.metrics.stage.labels(stage).observe(ms / 1000)
        return JSONResponse(predict_body(model.info, shape, results, timings, started))

    def _runs_on_loop(self, model: Model, upload: OpenedImage, imgsz: tuple[int, int]) -> bool:
        """Whether this predict's CPU work (at ``imgsz``) may run on the event loop: a short predict on an idle
        server (see the module docstring)."""
        width, height = upload.image.size
        limit_ms = 1000 * min(INLINE_MAX_INFERENCE_S, self.request_timeout / 10)
        short = model.expected_inference_ms(imgsz) <= limit_ms
        small = width * height <= INLINE_MAX_PIXELS
        return short and small and self.admission.lone_after_quiet(INLINE_QUIET_S) and self.cpu_work.idle()


def split_form(parts: list[Part]) -> tuple[bytes | None, dict[str, str]]:
    """The image's bytes (if sent) and the text fields, refusing what the wire format does not allow: a field
    twice, a file part other than ``file``, a URL ``source``, ``file`` as text."""
    fields: dict[str, str] = {}
    image = None
    for key, value in parts:
        if key in fields or (key == "file" and image is not None):
            raise InputError(f"{key!r} is given more than once; send each field once", key)
        if isinstance(value, bytes):
            if key != "file":
                raise InputError(f"unexpected file part {key!r}; send the image as 'file'", key)
            image = value
        else:
            fields[key] = value
    if "source" in fields:
        raise InputError("URL sources are not supported by this server; upload the image bytes as the 'file' part",
                         "source")
    if "file" in fields:
        raise InputError("'file' must be a file part (multipart/form-data upload), not a text field", "file")
    return image, fields


def replay(body: bytes) -> Receive:
    """An ASGI receive that gives ``body`` whole: Starlette's parser reads a body already read."""
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


def at_capacity(refusal: AtCapacity) -> HTTPException:
    """The 503 a refused predict answers, with when to retry."""
    return HTTPException(503, str(refusal), headers={"Retry-After": str(refusal.retry_after_s)})
