"""`usr explore`'s server (usr_es.explore_http) over real HTTP on 127.0.0.1: the page, the JSON answers and
their errors, and that nothing but GET is served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tools.screen_sample import MOTIF, NAME, screen
from usr_es.explore_http import ExploreServer


@pytest.fixture
def server(screen_server: ExploreServer) -> ExploreServer:
    return screen_server


def _get(server: ExploreServer, path: str, headers: dict[str, str] | None = None, **params: Any) -> tuple[int, Any]:
    url = server.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as answer:
            body = answer.read()
            return answer.status, json.loads(body) if answer.headers["Content-Type"] == "application/json" else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_page_its_script_and_style_are_served(server: ExploreServer) -> None:
    for path, kind in (("/", "text/html"), ("/app.js", "javascript"), ("/app.css", "text/css")):
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30) as answer:
            assert answer.status == 200 and kind in answer.headers["Content-Type"] and answer.read()


def test_a_request_naming_another_host_is_refused(server: ExploreServer) -> None:
    status, body = _get(server, "/api/datasets", headers={"Host": "attacker.example:80"})
    assert status == 403 and "this machine only" in body["error"]
    assert _get(server, "/api/datasets", headers={"Host": "localhost"})[0] == 200


def test_a_head_request_answers_like_get_without_a_body(server: ExploreServer) -> None:
    request = urllib.request.Request(server.url + "api/datasets", method="HEAD")
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200 and int(answer.headers["Content-Length"]) > 0 and answer.read() == b""


def test_the_json_answers(server: ExploreServer) -> None:
    status, datasets = _get(server, "/api/datasets")
    assert status == 200 and [(d["dataset"], d["rows"]) for d in datasets] == [(NAME, 278)]
    status, overview = _get(server, "/api/overview", dataset=NAME, as_of=2)
    assert status == 200 and (overview["seq"], overview["rows"]) == (2, 240)
    query = json.dumps({"dataset": NAME, "motif": MOTIF})
    status, page = _get(server, "/api/rows", q=query, offset=50, limit=10)
    assert status == 200 and page["total"] == 79 and len(page["rows"]) == 10 and page["offset"] == 50
    status, summary = _get(server, "/api/summary", q=query)
    assert status == 200 and summary["rows"] == 79 and summary["bio_types"] == {"dna": 79}
    status, record = _get(server, "/api/record", dataset=NAME, id=page["rows"][0]["id"])
    assert status == 200 and record["history"]["entries"][0]["credit"]["action"] == "import_rows"
    status, diff = _get(server, "/api/diff", dataset=NAME, **{"from": 4, "to": 5})
    assert status == 200 and diff["diff"]["deleted"] == 2 and [e["credit"]["seq"] for e in diff["events"]] == [5]
    fourth = overview["events"][3][1]  # a diff's ends may be times too
    status, by_time = _get(server, "/api/diff", dataset=NAME, **{"from": fourth, "to": 5})
    assert status == 200 and by_time["from_seq"] == 4 and by_time["diff"] == diff["diff"]


def test_as_of_takes_a_time_as_well_as_a_seq(server: ExploreServer) -> None:
    _, overview = _get(server, "/api/overview", dataset=NAME)
    second = overview["events"][1][1]  # the time of seq 2
    status, resolved = _get(server, "/api/resolve", dataset=NAME, point=second)
    assert status == 200 and resolved == {"seq": 2}
    status, at = _get(server, "/api/overview", dataset=NAME, as_of=second)
    assert status == 200 and at["seq"] == 2


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/rows", {"q": json.dumps({"dataset": NAME, "motif": "(("})}, 400, "not a regular expression"),
        ("/api/rows", {"q": "{not json"}, 400, "not JSON"),
        ("/api/rows", {"q": json.dumps({"dataset": NAME, "where": [{"column": "x", "op": "~"}]})}, 400, "not a query"),
        ("/api/rows", {"q": json.dumps({"dataset": NAME}), "limit": "lots"}, 400, "not a whole number"),
        ("/api/overview", {}, 400, "missing parameter 'dataset'"),
        ("/api/overview", {"dataset": "lab/ghost"}, 404, "Dataset not found"),
        ("/api/overview", {"dataset": "/etc"}, 400, "dataset id"),
        ("/api/overview", {"dataset": "../lab/screen"}, 400, "dataset id"),
        ("/api/record", {"dataset": NAME, "id": "nope"}, 404, "no record nope"),
        ("/api/nothing", {}, 404, "no such page"),
    ],
)
def test_errors_are_json_with_a_status(
    server: ExploreServer, path: str, params: dict[str, str], status: int, message: str
) -> None:
    got, body = _get(server, path, **params)
    assert got == status and message.lower() in body["error"].lower()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_nothing_but_get_is_served(server: ExploreServer, method: str) -> None:
    request = urllib.request.Request(server.url + "api/rows", data=b"{}", method=method)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405 and "read-only" in json.loads(refused.value.read())["error"]


def test_a_dataset_named_at_start_is_read_before_the_page_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from usr_es import Dataset

    screen(tmp_path)
    reads: list[str] = []
    real_view = Dataset.view

    def counted(self: Dataset, **kwargs: Any) -> Any:
        reads.append(self.name)
        return real_view(self, **kwargs)

    monkeypatch.setattr(Dataset, "view", counted)
    with ExploreServer(tmp_path) as running:
        running.warm(NAME).join(timeout=120)
        assert reads == [NAME]
        status, page = _get(running, "/api/rows", q=json.dumps({"dataset": NAME}), limit=1)
        status_summary, _ = _get(running, "/api/summary", q=json.dumps({"dataset": NAME}))
        assert (status, status_summary, page["total"]) == (200, 200, 278)
        assert reads == [NAME]  # the page's questions were answered from what the warm-up read


#: Runs `python ARGS...` with Ctrl-C's default disposition. A test run started in the background by a
#: non-interactive shell ignores SIGINT (POSIX), and a child inherits that: Python would then never raise
#: KeyboardInterrupt in it.
_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_usr_explore_serves_until_interrupted(tmp_path: Path) -> None:
    screen(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-c", _WITH_SIGINT, "-m", "usr_es", "--root", str(tmp_path), "explore", NAME,
            "--port", "0", "--no-browser"]  # fmt: skip
    process = subprocess.Popen([*argv, "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert process.stdout is not None
        started = json.loads(process.stdout.readline())["data"]
        assert started["url"].startswith("http://127.0.0.1:") and started["url"].endswith(f"#dataset={NAME}")
        with urllib.request.urlopen(started["url"].split("#")[0] + "api/datasets", timeout=30) as answer:
            assert json.loads(answer.read())[0]["dataset"] == NAME
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and b"stopped" in err


def test_usr_explore_refuses_a_dataset_that_does_not_exist(tmp_path: Path) -> None:
    screen(tmp_path)
    argv = [sys.executable, "-m", "usr_es", "--root", str(tmp_path), "explore", "lab/ghost", "--no-browser"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stderr.startswith("error:") and "Traceback" not in done.stderr
