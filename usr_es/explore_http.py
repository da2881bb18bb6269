"""`usr explore`: the explorer (`explore.Explorer`) behind a small local HTTP server (docs/adr/0022).

One page (`explore_static/`: HTML, CSS and plain JavaScript, no build step) and JSON answers to GET
requests; nothing else is served and no request can write: any other method is refused. Bound to
127.0.0.1 unless told otherwise. Each request runs in its own thread; the explorer keeps what it read.
"""

from __future__ import annotations

import contextlib
import mimetypes
import sys
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from .errors import InvalidInput, NotFound, UsrError
from .explore import Explorer, Query

STATIC = "explore_static"
_FILES = {"/": "index.html", "/app.js": "app.js", "/app.css": "app.css"}


def notebook_path() -> Path:
    """The seed's marimo notebook as installed with usr_es (`marimo edit` opens it; the `explore` extra)."""
    return Path(str(resources.files(__package__ or "usr_es").joinpath("notebooks", "usr_explorer.py")))


class _Request:
    """One request's query string, read by name."""

    def __init__(self, query: str) -> None:
        self._values = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}

    def text(self, name: str, default: str | None = None) -> str:
        value = self._values.get(name, default)
        if value is None:
            raise InvalidInput(f"missing parameter {name!r}")
        return value

    def number(self, name: str, default: int | None = None) -> int | None:
        value = self._values.get(name, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise InvalidInput(f"parameter {name!r} is not a whole number: {value!r}") from None

    def query(self) -> Query:
        try:
            return msgspec.json.decode(self.text("q"), type=Query)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"not a query: {exc}") from None
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"not JSON: {exc}") from None


def _routes(explorer: Explorer) -> dict[str, Callable[[_Request], Any]]:
    def point(r: _Request, name: str) -> int | None:
        """A point of the log: a seq, or a time / event id resolved to one (None: not given)."""
        given = r.text(name, "").strip()
        if given == "":
            return None
        return int(given) if given.isdigit() else explorer.resolve(r.text("dataset"), given)

    def seq(r: _Request) -> int | None:
        return point(r, "as_of")

    return {
        "/api/datasets": lambda r: explorer.datasets(),
        "/api/overview": lambda r: explorer.overview(r.text("dataset"), seq(r)),
        "/api/rows": lambda r: explorer.rows(r.query(), offset=r.number("offset", 0) or 0, limit=r.number("limit", 50)),
        "/api/summary": lambda r: explorer.summary(r.query()),
        "/api/record": lambda r: explorer.record(r.text("dataset"), r.text("id"), seq(r)),
        "/api/diff": lambda r: explorer.diff(r.text("dataset"), point(r, "from") or 0, point(r, "to")),
        "/api/resolve": lambda r: {"seq": explorer.resolve(r.text("dataset"), r.text("point"))},
    }


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _handler(explorer: Explorer, quiet: bool, loopback: bool) -> type[BaseHTTPRequestHandler]:
    routes = _routes(explorer)

    class Handler(BaseHTTPRequestHandler):
        server_version = "usr-explore"
        head_only = False

        def do_GET(self) -> None:
            if loopback and not self._from_this_machine():
                self._json(HTTPStatus.FORBIDDEN, {"error": "this explorer answers pages of this machine only"})
                return
            url = urlsplit(self.path)
            if url.path in _FILES:
                self._file(_FILES[url.path])
                return
            route = routes.get(url.path)
            if route is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
                return
            try:
                self._json(HTTPStatus.OK, route(_Request(url.query)))
            except ConnectionError:  # the page went away before the answer: nobody to tell
                return
            except NotFound as exc:
                self._json(HTTPStatus.NOT_FOUND, {"error": exc.message, "hint": exc.hint})
            except UsrError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": exc.message, "hint": exc.hint})
            except Exception as exc:  # a bug: the page says so; the server keeps serving
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error ({type(exc).__name__}): {exc}"})

        def _refuse(self) -> None:
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "the explorer is read-only"}, allow="GET, HEAD")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def do_HEAD(self) -> None:
            self.head_only = True
            self.do_GET()

        def _from_this_machine(self) -> bool:
            """Whether the request names this machine as its host: a page elsewhere that points its own
            name at 127.0.0.1 (DNS rebinding) sends that name, and is refused."""
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname
            return host in _LOOPBACK

        def _file(self, name: str) -> None:
            body = resources.files(__package__ or "usr_es").joinpath(STATIC, name).read_bytes()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, body, f"{kind}; charset=utf-8")

        def _json(self, status: HTTPStatus, data: Any, **headers: str) -> None:
            self._send(status, msgspec.json.encode(data), "application/json", **headers)

        def _send(self, status: HTTPStatus, body: bytes, kind: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                self.send_header(name.capitalize(), value)
            self.end_headers()
            if not self.head_only:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A page that went away mid-answer is not an error worth a traceback; anything else is said in one
        line (the handler already answered it with a JSON error where it could)."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            sys.stderr.write(f"usr explore: request from {client_address[0]} failed: {exc!r}\n")


class ExploreServer:
    """The explorer served at `url` until `stop` (or, in `serve_forever`, Ctrl-C)."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> None:
        self.explorer = Explorer(root)
        try:
            self._http = _Server((host, port), _handler(self.explorer, quiet, loopback=host in _LOOPBACK))
        except OSError as exc:
            self.explorer.close()
            raise InvalidInput(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="Pick another --port."
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/"

    def link(self, dataset: str | None = None) -> str:
        return self.url + (f"#dataset={dataset}" if dataset else "")

    def start(self) -> ExploreServer:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self._http.serve_forever, name="usr-explore", daemon=True)
        self._thread.start()
        return self

    def warm(self, dataset: str) -> threading.Thread:
        """Read `dataset`'s view and its first summary in the background, so the page opened on it answers
        at once (at 1M rows reading the view takes ~0.6 s)."""

        def read() -> None:
            with contextlib.suppress(UsrError):
                self.explorer.summary(Query(dataset=dataset))

        thread = threading.Thread(target=read, name="usr-explore-warm", daemon=True)
        thread.start()
        return thread

    def serve_forever(self, *, open_browser: bool = False, dataset: str | None = None) -> None:
        if dataset is not None:
            self.warm(dataset)
        if open_browser:
            webbrowser.open(self.link(dataset))
        try:
            self._http.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()
        self.explorer.close()

    def __enter__(self) -> ExploreServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
