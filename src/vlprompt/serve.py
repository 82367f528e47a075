"""A trained run as an HTTP service: `vlprompt serve RUN` (FastAPI + uvicorn, an optional extra:
`pip install 'vlprompt[serve]'`).

Endpoints: `POST /predict` (multipart, image files under the field `files`; `?topk=`,
`?coverage=` and `?score=` for conformal sets where the run is calibrated), `GET /health`,
`GET /labels`, and `GET /` (a self-contained page to try an image in a browser).

The model is the run's method as a fixed classifier (`PromptMethod.classifier()` semantics): the
class side is computed once at start and held for the server's lifetime; images from concurrent
requests are collected into one forward pass (`Batcher`, up to `max_batch` images or
`max_wait_ms`), run in one model thread so that the event loop stays free. Probabilities are
softmax(logits / T) with the run's temperature (1 for a run without calibration).

Every refused request is answered with one line `{"error": "..."}` and a 4xx code, and the server
goes on: uploads are bounded in bytes (Content-Length checked before anything is read, the body
counted as it streams), in files per request, in time (`body_timeout_s`), and images in pixels
(checked from the header, before any decoding); only PNG, JPEG, WebP, GIF, BMP and TIFF are
opened, and an uploaded file name is only echoed (its last path component), never used as a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import math
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from vlprompt.errors import ServeError

if TYPE_CHECKING:
    import numpy as np
    import torch

INSTALL_HINT = "pip install 'vlprompt[serve]' (or: pip install fastapi uvicorn python-multipart)"
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # no EPS etc.: PIL runs tools
FILES_PER_BATCH = 4  # a request carries at most this many times max_batch files
DECODE_THREADS = 2  # images decoded at once (each up to max_pixels before it is reduced)
MAX_CONNECTIONS = 64  # uvicorn answers 503 beyond this many connections and requests at once
KEEP_ALIVE_S = 5
GRACEFUL_SHUTDOWN_S = 5
MAX_NAME_CHARS = 200
PAGE = Path(__file__).parent / "assets" / "serve.html"
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
ENDPOINTS = "GET /, GET /health, GET /labels, POST /predict"


# ---- limits -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for and send (CLI flags of the same names)."""

    topk: int = 5
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name, low in (("topk", 1), ("max_batch", 1), ("max_pixels", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ServeError(f"--{_flag(name)} must be a whole number >= {low}, got {value!r}")
        for name in ("max_wait_ms", "max_upload_mb", "body_timeout_s"):
            value = getattr(self, name)
            zero_ok = name == "max_wait_ms"
            if not (isinstance(value, int | float) and math.isfinite(value)) or (
                value < 0 if zero_ok else value <= 0
            ):
                bound = ">= 0" if zero_ok else "> 0"
                raise ServeError(f"--{_flag(name)} must be a number {bound}, got {value!r}")

    @property
    def max_files(self) -> int:
        return FILES_PER_BATCH * self.max_batch

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def require_packages() -> None:
    """ServeError naming the extra to install when FastAPI, uvicorn or python-multipart is
    missing (checked before a run is loaded)."""
    import importlib.util

    wanted = {
        "fastapi": ["fastapi"],
        "uvicorn": ["uvicorn"],
        "python-multipart": ["python_multipart", "multipart"],  # multipart: its old name
    }
    missing = [
        package
        for package, modules in wanted.items()
        if not any(_importable(m, importlib.util) for m in modules)
    ]
    if missing:
        raise ServeError(f"vlprompt serve needs {', '.join(missing)}: {INSTALL_HINT}")


def _importable(module: str, util: Any) -> bool:
    try:
        return util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


def host_warning(host: str) -> str | None:
    """The warning line for a host other machines can reach (None for a loopback address)."""
    if host == "localhost":
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return (
        f"vlprompt: warning: serving on {host}: other machines can reach this server, which has "
        "no authentication and no TLS; serve on 127.0.0.1 behind a reverse proxy that adds them"
    )


def upload_name(raw: str | None, index: int) -> str:
    """What the answer calls an uploaded file: the last component of the name it was sent
    with (either slash), control characters dropped, at most MAX_NAME_CHARS; never a path."""
    text = "".join(c for c in (raw or "") if c.isprintable())
    name = PurePosixPath(text.replace("\\", "/")).name.strip()
    if name in ("", ".", ".."):
        return f"file-{index + 1}"
    return name[-MAX_NAME_CHARS:]


# ---- decoding -----------------------------------------------------------------------------------
def decode_upload(data: bytes, name: str, bound: int, max_pixels: int) -> Any:
    """An uploaded file's bytes as an RGB PIL image reduced as `Run.predict` reduces a file
    (`decode_bounded`); its pixel count is checked from the header before anything is decoded.
    ServeError (400, or 413 for too many pixels) for anything else."""
    from PIL import Image, UnidentifiedImageError

    from vlprompt.data.dataset import decode_bounded

    if not data:
        raise ServeError(f"{name} is empty; send an image file (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise _too_many_pixels(name, f"{width}x{height}", max_pixels)
            return decode_bounded(img, bound)
    except ServeError:
        raise
    except Image.DecompressionBombError:
        raise _too_many_pixels(name, "its header declares an image that", max_pixels) from None
    except UnidentifiedImageError:
        raise ServeError(
            f"{name} is not an image this server reads; send PNG, JPEG, WebP, GIF, BMP or TIFF"
        ) from None
    except Exception as exc:  # noqa: BLE001  (PIL raises many kinds on damaged files)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ServeError(
            f"{name} cannot be decoded ({reason}); the file is damaged or truncated"
        ) from None


def _too_many_pixels(name: str, size: str, max_pixels: int) -> ServeError:
    return ServeError(
        f"{name}: {size} has more pixels than this server decodes ({max_pixels:,}, "
        "--max-pixels); send a smaller image",
        413,
    )


# ---- the model ----------------------------------------------------------------------------------
class ServedModel:
    """A run as a fixed classifier for the server's lifetime: eval mode, the class side held
    (`holding_class_side`, computed at `open` by a warm-up forward), no autograd in the model
    thread (torch's grad mode is per thread, so `probabilities` sets it where it runs)."""

    def __init__(self, run: Any):
        from vlprompt.api import PREDICT_SIDE_FACTOR
        from vlprompt.data import transform_for

        self.run = run
        self.classnames = list(run.classnames)
        self.method_name = run.config.method
        self.temperature = float(getattr(run, "temperature", 1.0))
        self.calibration = _calibration_of(run)
        self.transform = transform_for(run.clip, train=False)
        self.bound = PREDICT_SIDE_FACTOR * run.clip.image_size
        self._held = contextlib.ExitStack()

    def open(self) -> None:
        import torch

        self.run.method.eval()
        self._held.enter_context(self.run.method.holding_class_side())
        size = self.run.clip.image_size
        self.probabilities(torch.zeros(1, 3, size, size))  # computes the class side now

    def close(self) -> None:
        self._held.close()

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        """[B, C] softmax(logits / T) of transformed images [B, 3, H, W]."""
        import torch

        with torch.no_grad():
            logits = self.run.method(batch.to(self.run.clip.device)).float()
            return (logits / self.temperature).softmax(dim=-1).cpu().numpy()

    def tensor(self, data: bytes, name: str, max_pixels: int) -> torch.Tensor:
        """An uploaded file as the model's input [3, H, W] (`Run.predict`'s decoding)."""
        return self.transform(decode_upload(data, name, self.bound, max_pixels))


# ---- batching -----------------------------------------------------------------------------------
class Batcher:
    """Collects images from concurrent requests into batches of at most `max_batch`, waiting at
    most `max_wait_s` after a batch's first image, and runs `classify` (stacked images -> one row
    per image) on `executor`; each image's future gets its own row. Images whose request has gone
    away (future cancelled) are left out of the batch.

    `coming()` (optional) counts images on their way to the queue (being decoded): when the queue
    is empty and none is coming, the batch runs at once instead of waiting, so a lone request
    does not pay `max_wait_s`; images that arrive during a forward pass form the next batch."""

    def __init__(
        self,
        classify: Callable[[Any], Any],
        max_batch: int,
        max_wait_s: float,
        executor: ThreadPoolExecutor,
        coming: Callable[[], int] | None = None,
    ):
        self.classify = classify
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.coming = coming
        self.batches = 0
        self.images = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()

    def submit(self, image: Any) -> asyncio.Future:
        """The future of one image's row."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((image, future))
        return future

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            batch = [(image, future) for image, future in batch if not future.done()]
            if batch:
                await self._classify(batch)

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0 or (self.coming is not None and self.coming() == 0):
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _classify(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        import torch

        try:
            stacked = torch.stack([image for image, _ in batch])
            rows = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.classify, stacked
            )
        except Exception as exc:  # noqa: BLE001  (handed to each waiting request; the loop goes on)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.images += len(batch)
        for (_, future), row in zip(batch, rows):
            if not future.done():
                future.set_result(row)


# ---- requests -----------------------------------------------------------------------------------
class Predictor:
    """Uploads -> probability rows: decoded in DECODE_THREADS threads, at most `max_files`
    images decoded and not yet classified at once over all requests, classified by the
    batcher."""

    def __init__(self, model: ServedModel, limits: ServeLimits):
        self.model = model
        self.limits = limits
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="vlprompt-model")
        self.decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="vlprompt-decode")
        self.decoding = 0  # images of requests being read that are not queued yet
        self.batcher = Batcher(model.probabilities, limits.max_batch, limits.max_wait_ms / 1000,
                               self.model_thread, coming=lambda: self.decoding)  # fmt: skip
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.model_thread, self.model.open)
        self._slots = asyncio.Semaphore(self.limits.max_files)
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.model_thread.shutdown()
        self.model.close()
        self.decoders.shutdown(cancel_futures=True)

    async def rows(self, uploads: list[tuple[str, bytes]]) -> list[Any]:
        """One probability row per upload, in order; the first bad file raises ServeError.
        The request's images count as coming (`decoding`) until each is queued."""
        assert self._slots is not None, "start() first"
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future] = []
        self.decoding += len(uploads)
        try:
            for name, data in uploads:
                await self._slots.acquire()
                try:
                    tensor = await loop.run_in_executor(
                        self.decoders, self.model.tensor, data, name, self.limits.max_pixels
                    )
                except BaseException:
                    self._slots.release()
                    raise
                future = self.batcher.submit(tensor)
                self.decoding -= 1
                future.add_done_callback(lambda _: self._slots.release())
                futures.append(future)
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            self.decoding -= len(uploads) - len(futures)  # those never queued


def _int_param(query: Any, name: str, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ServeError(f"?{name}={text!r} is not a whole number") from None
    if value < 1:
        raise ServeError(f"?{name} must be >= 1, got {value}")
    return value


def _coverage_param(query: Any) -> tuple[float, str] | None:
    text = query.get("coverage")
    if text is None:
        return None
    try:
        coverage = float(text)
    except ValueError:
        raise ServeError(f"?coverage={text!r} is not a number") from None
    if not 0 < coverage < 1:
        raise ServeError(f"?coverage must lie between 0 and 1, got {text}")
    return coverage, query.get("score", "lac")


def _sets(model: ServedModel, probs: Any, wanted: tuple[float, str]) -> list[list]:
    """Each image's conformal prediction set (class, probability) at (coverage, score)."""
    from vlprompt.calibration import named_sets, prediction_sets
    from vlprompt.errors import CalibrationError

    if model.calibration is None:
        raise ServeError(
            "this run has no calibration record, so the server gives no prediction sets; "
            "leave out ?coverage= or serve a calibrated run"
        )
    try:
        threshold = model.calibration.threshold(*wanted)
        probs = _at_temperature(probs, model.temperature, model.calibration.temperature)
        return named_sets(probs, prediction_sets(probs, threshold), model.classnames)
    except CalibrationError as exc:
        raise ServeError(str(exc)) from None


def _calibration_of(run: Any) -> Any:
    """The run's calibration record as a `Calibration` (None when it has none)."""
    from vlprompt.calibration import Calibration

    record = getattr(run, "calibration", None)
    return Calibration.from_dict(record) if isinstance(record, dict) else record


def _at_temperature(probs: Any, served: float, fitted: float) -> Any:
    """Probabilities at temperature `served` turned into those at `fitted` (the temperature the
    conformal thresholds were calibrated at; the served one is 1 when the fit hit its bound)."""
    import numpy as np

    if np.isclose(served, fitted):
        return probs
    z = np.log(np.clip(probs, 1e-300, None)) * (served / fitted)
    z -= z.max(axis=1, keepdims=True)
    z = np.exp(z)
    return z / z.sum(axis=1, keepdims=True)


def _answer(
    model: ServedModel, names: list[str], rows: list[Any], topk: int, wanted: Any
) -> dict[str, Any]:
    import numpy as np

    probs = np.stack(rows)
    k = min(topk, len(model.classnames))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    predictions = [
        {"file": name,
         "top": [{"class": model.classnames[c], "probability": float(row[c])} for c in top]}
        for name, row, top in zip(names, probs, order)
    ]  # fmt: skip
    answer: dict[str, Any] = {"predictions": predictions, "temperature": model.temperature}
    if wanted is not None:
        for prediction, members in zip(predictions, _sets(model, probs, wanted)):
            prediction["set"] = [{"class": c, "probability": p} for c, p in members]
        answer["coverage"], answer["score"] = wanted
    return answer


async def _uploads(request: Any, limits: ServeLimits) -> tuple[list[str], list[bytes]]:
    """The files of a multipart request's `files` field: (names, bytes)."""
    from starlette.exceptions import HTTPException

    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise ServeError(
            f"POST /predict takes multipart/form-data (files under the field 'files'), got "
            f"{kind or 'no content type'!r}; e.g. curl -F files=@cat.jpg URL/predict",
            415,
        )
    try:
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files + 16)
    except HTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise ServeError(
                f"more than {limits.max_files} files in one request (4 x --max-batch); send "
                "them in several requests",
                413,
            ) from None
        raise ServeError(
            f"the request body is not valid multipart/form-data ({exc.detail})"
        ) from None
    try:
        files = form.getlist("files")
        if not files:
            raise ServeError("no file under the field 'files'; e.g. curl -F files=@cat.jpg")
        if any(isinstance(f, str) for f in files):
            raise ServeError("the field 'files' holds text, not a file; send files=@PATH")
        names = [upload_name(f.filename, i) for i, f in enumerate(files)]
        return names, [await f.read() for f in files]
    finally:
        await form.close()


# ---- the application ----------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a declared Content-Length over the limit is refused before the body is
    read; otherwise the body is counted as it streams (ServeError 413 once over the limit) and
    must arrive within `timeout_s` (ServeError 408)."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            problem = self._declared_problem(declared)
            if problem is not None:
                return await _send_error(send, problem)
        seen = 0
        deadline: float | None = None

        async def limited() -> dict:
            nonlocal seen, deadline
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ServeError(
                    f"the request body did not arrive within {self.timeout_s:g} s "
                    "(--body-timeout-s)",
                    408,
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large(f"more than {seen:,} bytes")
            return message

        await self.app(scope, limited, send)

    def _declared_problem(self, declared: bytes) -> ServeError | None:
        if not declared.isdigit():
            return ServeError(f"Content-Length {declared.decode('latin-1')!r} is not a number")
        if int(declared) > self.max_bytes:
            return self._too_large(f"{int(declared):,} bytes")
        return None

    def _too_large(self, size: str) -> ServeError:
        return ServeError(
            f"the upload is {size}, more than this server takes ({self.max_bytes:,} bytes, "
            "--max-upload-mb); send fewer or smaller files",
            413,
        )


async def _send_error(send: Callable, error: ServeError) -> None:
    import json

    body = json.dumps({"error": str(error)}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": error.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def create_app(model: ServedModel, limits: ServeLimits) -> Any:
    """The FastAPI application serving `model` (started and stopped with the app's lifespan)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException

    predictor = Predictor(model, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any):
        await predictor.start()
        try:
            yield
        finally:
            await predictor.stop()
            done = predictor.batcher
            print(f"vlprompt: stopped; classified {done.images} images in {done.batches} "
                  "batches", flush=True)  # fmt: skip

    app = FastAPI(title="vlprompt", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes,
                       timeout_s=limits.body_timeout_s)  # fmt: skip

    @app.exception_handler(ServeError)
    async def refused(_request: Any, exc: ServeError) -> JSONResponse:
        headers = {"connection": "close"} if exc.status in (408, 413) else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, exc: HTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        text = f"{exc.detail}: {where}; the endpoints are {ENDPOINTS}"
        return JSONResponse({"error": text}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def failed(_request: Any, exc: Exception) -> JSONResponse:
        text = f"internal error ({type(exc).__name__}); the server's log has the details"
        return JSONResponse({"error": text}, status_code=500)

    async def health(_request: Any) -> JSONResponse:
        return JSONResponse({
            "status": "ok", "method": model.method_name, "classes": len(model.classnames),
            "batches": predictor.batcher.batches, "images": predictor.batcher.images})  # fmt: skip

    async def labels(_request: Any) -> JSONResponse:
        return JSONResponse(model.classnames)

    async def page(_request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "content-security-policy": PAGE_POLICY, "x-content-type-options": "nosniff"})  # fmt: skip

    async def predict(request: Any) -> JSONResponse:
        topk = _int_param(request.query_params, "topk", limits.topk)
        wanted = _coverage_param(request.query_params)
        if wanted is not None and model.calibration is None:
            _sets(model, None, wanted)  # the clear error before the upload is read
        names, datas = await _uploads(request, limits)
        rows = await predictor.rows(list(zip(names, datas)))
        return JSONResponse(_answer(model, names, rows, topk, wanted))

    # plain Starlette routes: the endpoints read the request themselves (no FastAPI validation)
    app.add_route("/health", health, methods=["GET"])
    app.add_route("/labels", labels, methods=["GET"])
    app.add_route("/", page, methods=["GET"])
    app.add_route("/predict", predict, methods=["POST"])
    return app


# ---- the server ---------------------------------------------------------------------------------
def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or ServeError saying why not (port in use, ...)."""
    if not 0 <= port <= 65535:
        raise ServeError(f"--port must lie between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on {host!r}: {exc.strerror}; pass an address of this machine, e.g. "
            "--host 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
            "(or stop the program that uses it)"
        ) from None
    return sock


def serve(
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits | None = None,
    device: str = "cpu",
    trust_torchscript: bool = False,
    allow_remote_weights: bool = False,
) -> None:
    """Serve a finished run over HTTP until SIGINT/SIGTERM. The port is bound first (a port in
    use fails at once), then the run is loaded and its class side computed; /health answers
    once the model is ready. Sets PIL's MAX_IMAGE_PIXELS to at least `limits.max_pixels`."""
    limits = limits or ServeLimits()
    require_packages()
    import uvicorn
    from PIL import Image

    from vlprompt.api import load_run

    sock = listening_socket(host, port)
    try:
        warning = host_warning(host)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        start = time.perf_counter()
        run = load_run(run_dir, device=device, trust_torchscript=trust_torchscript,
                       allow_remote_weights=allow_remote_weights)  # fmt: skip
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, limits.max_pixels)
        model = ServedModel(run)
        app = create_app(model, limits)
        bound_host, bound_port = sock.getsockname()[:2]
        print(f"vlprompt: serving {run_dir} ({model.method_name}, {len(model.classnames)} "
              f"classes, loaded in {time.perf_counter() - start:.1f} s) at "
              f"http://{_url_host(bound_host)}:{bound_port}/", flush=True)  # fmt: skip
        config = uvicorn.Config(
            app, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, limit_concurrency=MAX_CONNECTIONS,
            server_header=False,
        )  # fmt: skip
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
