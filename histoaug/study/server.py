"""``histoaug study serve``: the reader's page over HTTP, each answer stored on the server as it is given.

Security, by construction rather than by filtering:

- files: a whitelist built at start from ``STUDY/reader/`` (the page, ``study.js``, the patch
  PNGs), looked up by exact request path; nothing else (``key.json``, ``manifest.json``, the
  answers, anything outside the folder, any ``..``) has a URL;
- requests: bodies only on ``POST /api/answers``, at most :data:`MAX_BODY_BYTES`, JSON only
  (``Content-Type: application/json``, which browsers do not send cross-origin without a
  preflight this server never grants); every field validated (:mod:`histoaug.study.answers`);
  nothing from a request is evaluated, used as a path or echoed into HTML;
- on a loopback bind, requests whose ``Host`` is not the loopback address are refused (DNS rebinding);
- the page is served with a ``Content-Security-Policy`` that allows only its own scripts.

API: ``GET /api/study`` (id, mode), ``GET /api/answers?reader=NAME`` (that reader's answer file),
``POST /api/answers`` with ``{"study_id", "reader", "answer": {...}}``.
"""

from __future__ import annotations

import errno
import json
import logging
import mimetypes
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from histoaug.errors import InvalidArgumentError, StudyError
from histoaug.study import layout
from histoaug.study.answers import AnswerStore, answer_file_json

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024
MAX_URL_CHARS = 2048
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def served_files(study: layout.Study) -> dict[str, Path]:
    """URL path -> file, for every file readers may fetch (and nothing else)."""
    reader = study.reader_dir
    files = {f"/{name}": reader / name for name in (*layout.PAGE_FILES, layout.STUDY_JS)}
    files.update({f"/{layout.PATCHES_DIR}/{patch}.png": study.patch_path(patch) for patch in study.order})
    files["/"] = reader / "index.html"
    return {url: path for url, path in files.items() if path.is_file()}


class StudyServer(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR: a restarted server gets its port back although the killed one left connections in
    # TIME_WAIT; on Linux and macOS it never lets two servers listen on one port (that stays "in use")
    allow_reuse_address = True

    def __init__(self, study: layout.Study, host: str, port: int) -> None:
        self.study = study
        self.store = AnswerStore(study)
        self.files = served_files(study)
        try:
            super().__init__((host, port), StudyRequestHandler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidArgumentError(f"port {port} on {host} is in use; pick another with --port") from None
            raise InvalidArgumentError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        self.allowed_hosts: set[str] | None = None
        if host in LOOPBACK:
            bound = self.server_address[1]
            self.allowed_hosts = {f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]")}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"


class StudyRequestHandler(BaseHTTPRequestHandler):
    server: StudyServer
    server_version = "histoaug-study"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # --- responses ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self.close_connection = True
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        allowed = self.server.allowed_hosts
        return allowed is None or self.headers.get("Host", "") in allowed

    # --- methods -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        if len(self.path) > MAX_URL_CHARS:
            return self._error(HTTPStatus.REQUEST_URI_TOO_LONG, "URL too long")
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if path == "/api/study":
            return self._json(HTTPStatus.OK, {"study_id": self.server.study.study_id, "mode": "served",
                                              "patches": len(self.server.study.order)})
        if path == "/api/answers":
            reader = parse_qs(parts.query).get("reader", [""])[0]
            try:
                stored = self.server.store.answers_of(reader)
            except StudyError as exc:
                return self._error(HTTPStatus.BAD_REQUEST, str(exc))
            body = answer_file_json(stored.study_id, stored.reader, stored.answers, "served").encode()
            return self._send(HTTPStatus.OK, body, "application/json; charset=utf-8")
        file = self.server.files.get(path)
        if file is None:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        return self._send(HTTPStatus.OK, file.read_bytes(), content_type, cache=path.startswith("/patches/"))

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if urlsplit(self.path).path != "/api/answers":
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if length < 0 or length > MAX_BODY_BYTES:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "body is not JSON")
        if not isinstance(payload, dict):
            return self._error(HTTPStatus.BAD_REQUEST, "body must be an object")
        if payload.get("study_id") != self.server.study.study_id:
            return self._error(HTTPStatus.CONFLICT, "answer for another study")
        try:
            count = self.server.store.record(payload.get("reader"), payload.get("answer"))
        except StudyError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        return self._json(HTTPStatus.OK, {"saved": True, "answered": count})

    def do_PUT(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT


def make_server(study_root: str | Path, host: str = "127.0.0.1", port: int = 8000) -> StudyServer:
    """A server for the study at ``study_root`` bound to ``host:port`` (port 0: any free one); call serve_forever."""
    if not 0 <= port <= 65535:
        raise InvalidArgumentError(f"--port must be in [0, 65535], got {port}")
    return StudyServer(layout.load_study(study_root), host, port)
