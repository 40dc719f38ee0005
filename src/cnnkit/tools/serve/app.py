"""The web app of ``cnnkit serve``: pages (static HTML + JavaScript, no build step, nothing fetched from
outside) and the JSON API they poll.

Pages: ``/`` the runs, ``/runs/{name}`` one run (config, live curves, report, predict), ``/explain`` the
glass box stepped window by window. API (every answer JSON; every error ``{"error": "..."}``)::

    GET  /api/runs                      every run's status, task, model, epochs, val_* metrics
    GET  /api/runs/{name}               one run: the same, with its config, final.json and classes
    GET  /api/runs/{name}/metrics       metrics.jsonl, one row per epoch so far
    POST /api/runs/{name}/predict       multipart: field ``file`` (an image) or ``text``; ?top_k=5; a
                                        detector's ?conf=0.25 (the lowest score kept); a
                                        segmentation run adds mask_overlay (PNG data URI) and mask_legend
    POST /api/runs/{name}/report        build the run's report.html (cnnkit report)
    GET  /api/explain/{op}              the course example of conv, maxpool, avgpool or l2pool

A POST that a browser sends from another site (``Sec-Fetch-Site: cross-site``, or an ``Origin`` other than
the Host) is refused with 403 (CSRF); a file of the runs folder that cannot be read or written answers 503,
anything unexpected 500, both as JSON.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnkit.errors import UserError
from cnnkit.explain.ops import course_example, to_json
from cnnkit.runs import RunFolder, dumps
from cnnkit.tools.serve.listing import RunNotFound, list_runs, metric_rows, resolve_run, run_file, run_summary
from cnnkit.tools.serve.predict import (MAX_TEXT_CHARS, MAX_UPLOAD_BYTES, ModelCache, UploadRejected, check_image,
                                        check_conf, check_text, check_top_k, predict_image, predict_text)

STATIC = Path(__file__).resolve().parent / "static"

#: The largest request body: an upload at its limit plus the multipart envelope around it.
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024

#: Pages run only the app's own scripts and styles; nothing is loaded from elsewhere.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
       "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
#: A run's report.html is shown in a sandbox (its own scripts may run, it cannot reach the app's origin).
REPORT_CSP = "sandbox allow-scripts allow-popups"


def json_response(data: Any, status: int = 200) -> Response:
    """Strict JSON (a NaN metric becomes null), as every file of a run folder is written."""
    return Response(dumps(data), status_code=status, media_type="application/json")


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


#: The methods that change nothing (the others predict and build reports, so they are checked for CSRF).
SAFE_METHODS = ("GET", "HEAD")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """``host:port`` of a Host header or an Origin's netloc, lower-cased, the scheme's port filled in;
    None if it does not parse."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port if parts.port is not None else DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        return None
    return (parts.hostname, port) if parts.hostname and port is not None else None


def cross_origin_refusal(scope: Scope, headers: dict[bytes, bytes]) -> str | None:
    """Why a state-changing request comes from another site (CSRF: a page elsewhere posting a form or a
    "simple" fetch to this app), or None when it may go on.

    Browsers say where a request comes from: ``Sec-Fetch-Site`` (cross-site) and ``Origin`` (sent with
    every POST). A client that sends neither (curl, scripts, the TestClient) is not a browser that a page
    elsewhere could steer, and is let through.
    """
    if scope["method"] in SAFE_METHODS:
        return None
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    if site == "cross-site":
        return (f"refusing a {scope['method']} request sent from another site (Sec-Fetch-Site: cross-site): "
                f"use the app's own pages, or a client that is not a browser")
    if b"origin" not in headers:
        return None
    origin = headers[b"origin"].decode("latin-1").strip()
    host = headers.get(b"host", b"").decode("latin-1").strip()
    parts = urlsplit(origin) if origin != "null" else None
    source = _host_port(parts.netloc, parts.scheme) if parts is not None and parts.scheme else None
    if source is None or source != _host_port(host, scope.get("scheme", "http")):
        return (f"refusing a {scope['method']} request from origin {origin!r} to host {host!r}: the app takes "
                f"requests that change things only from its own pages")
    return None


class Guard:
    """Refuses a request body over ``limit`` bytes with 413 (by its Content-Length, or while it streams
    in) and a browser's request from another site that would change things with 403 (CSRF), and adds the
    security headers to every answer."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        report = scope["path"].endswith("/report.html")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"content-security-policy", (REPORT_CSP if report else CSP).encode())]
                message = {**message, "headers": headers}
            await send(message)

        headers = dict(scope["headers"])
        refusal = cross_origin_refusal(scope, headers)
        if refusal is not None:
            await error_response(refusal, 403)(scope, receive, send_with_headers)
            return
        too_large = f"the request body is larger than the limit of {self.limit:,} bytes"
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await error_response(too_large, 413)(scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send_with_headers)


def create_app(runs_dir: str | Path, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The app serving the run folders in ``runs_dir``.

    ``allowed_hosts``: the Host header values accepted (``cnnkit serve`` on 127.0.0.1 passes
    ``["127.0.0.1", "localhost"]``, so that a web page cannot reach the app by DNS rebinding); None accepts any.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise UserError(f"runs folder {str(root)!r} does not exist" if not root.exists()
                        else f"{str(root)!r} is a file, not a runs folder")
    app = FastAPI(title="cnnkit", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(Guard, limit=MAX_BODY_BYTES)  # the outermost: it sees every request first
    models = ModelCache()
    report_lock = threading.Lock()

    # -- errors: always {"error": "..."}, a user's mistake never a 500

    @app.exception_handler(UserError)
    async def user_error(_: Request, e: UserError) -> Response:
        status = e.status if isinstance(e, UploadRejected) else 404 if isinstance(e, RunNotFound) else 400
        return error_response(str(e), status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 404 and e.detail == "Not Found":  # no route matched
            return error_response(f"no page or API at {request.url.path!r}", 404)
        if e.status_code == 405:
            return error_response(f"{request.method} is not allowed on {request.url.path!r}", 405)
        return error_response(str(e.detail), e.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()]
        return error_response("; ".join(parts) or "invalid request", 422)

    @app.exception_handler(OSError)
    async def os_error(request: Request, e: OSError) -> Response:
        """A file of the runs folder that cannot be read or written now (a read-only folder, a checkpoint
        being replaced while it loads): the server's state, not a bug, and often passing: 503."""
        return error_response(f"{request.method} {request.url.path} could not read or write a file of the runs "
                              f"folder ({type(e).__name__}: {e}); check the folder's permissions and free space, "
                              f"or try again", 503)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, e: Exception) -> Response:
        """Anything else is a bug: still JSON for the pages to show, naming the exception (no traceback to
        the browser; uvicorn logs it)."""
        return error_response(f"{request.method} {request.url.path} failed: {type(e).__name__}: {e}", 500)

    # -- pages

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/explain", include_in_schema=False)
    def explain_page() -> FileResponse:
        return FileResponse(STATIC / "explain.html")

    @app.get("/runs/{name}", include_in_schema=False)
    def run_page(name: str) -> FileResponse:
        resolve_run(root, name)
        return FileResponse(STATIC / "run.html")

    @app.get("/runs/{name}/report.html", include_in_schema=False)
    def report_file(name: str) -> FileResponse:
        path = run_file(resolve_run(root, name), "report.html")
        if not path.is_file():
            raise HTTPException(404, f"run {name!r} has no report.html yet; build it with 'cnnkit report'")
        return FileResponse(path, media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- runs

    @app.get("/api/runs")
    def api_runs() -> Response:
        return json_response({"runs_dir": str(root), "runs": [run_summary(p) for p in list_runs(root)]})

    @app.get("/api/runs/{name}")
    def api_run(name: str) -> Response:
        path = resolve_run(root, name)
        run = RunFolder(path)
        summary = run_summary(path)
        final = run.read_final() if run_file(path, "final.json").is_file() else None
        meta = run.read_meta() if run_file(path, "meta.json").is_file() else {}
        config = run_file(path, "config.yaml").read_text(errors="replace")
        return json_response({**summary, "config": config,
                              "final": final, "classes": meta.get("classes"),
                              "max_upload_bytes": MAX_UPLOAD_BYTES, "max_text_chars": MAX_TEXT_CHARS})

    @app.get("/api/runs/{name}/metrics")
    def api_metrics(name: str) -> Response:
        path = resolve_run(root, name)
        run_file(path, "metrics.jsonl")
        return json_response({"name": path.name, "rows": metric_rows(path)})

    @app.post("/api/runs/{name}/predict")
    async def api_predict(name: str, request: Request, top_k: int = 5, conf: float = 0.25) -> Response:
        path = resolve_run(root, name)
        check_top_k(top_k)
        check_conf(conf)
        async with request.form(max_files=1, max_fields=4, max_part_size=MAX_TEXT_CHARS * 4 + 1024) as form:
            upload, text = form.get("file"), form.get("text")
            image = check_image(await upload.read(MAX_UPLOAD_BYTES + 1)) if isinstance(upload, UploadFile) else None
        if image is not None:
            filename = Path(upload.filename or "upload").name
            result = await run_in_threadpool(predict_image, models, path, image, filename, top_k, conf)
        elif isinstance(text, str):
            result = await run_in_threadpool(predict_text, models, path, check_text(text), top_k)
        else:
            raise UserError("send an image file in the form field 'file' (multipart/form-data), or a text in "
                            "the field 'text'")
        return json_response(result)

    @app.post("/api/runs/{name}/report")
    def api_build_report(name: str) -> Response:
        from cnnkit.tools.report import build_report

        path = resolve_run(root, name)
        with report_lock:
            built = Path(build_report(path))
        return json_response({"report": f"/runs/{path.name}/report.html", "path": str(built)})

    # -- the glass box

    @app.get("/api/explain/{op}")
    def api_explain(op: str) -> Response:
        return json_response(to_json(course_example(op)))

    return app
