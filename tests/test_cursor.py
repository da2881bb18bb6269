"""Durable consumer cursors over `.events.log` (resume, torn tails, truncation and rewrite detection,
follow mode) and docs/event-log.md, whose marked examples are checked against real logs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usr_es import Dataset
from usr_es.cursor import Cursor, check_cursor, load_cursor, read_since, save_cursor, tail
from usr_es.errors import EXIT_INTEGRITY, IntegrityError, InvalidInput
from usr_es.events import ACTIONS, LogRecord, record_decoder
from usr_es.log import line_digest, read_line_before

REPO = Path(__file__).resolve().parents[1]
EVENT_LOG_DOC = REPO / "docs" / "event-log.md"
_BLOCK = re.compile(r"<!-- test: (\w+) -->[ \t]*\n```(\w+)[ \t]*\n(.*?)\n```", re.S)


def log_lines(ds: Dataset) -> list[bytes]:
    """The log's complete lines, each with its newline."""
    data = ds.log_path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def add(ds: Dataset, *sequences: str) -> None:
    for sequence in sequences:
        ds.add_sequences([sequence], source=f"test {sequence}")


def consume(ds: Dataset, cursor: Path, **kwargs: object) -> list[bytes]:
    return list(tail(ds.log_path, ds.name, cursor_path=cursor, **kwargs))  # type: ignore[arg-type]


def following(
    ds: Dataset,
    *,
    until: Callable[[], bool] = lambda: False,
    seconds: float = 30.0,
    cursor: Path | None = None,
    poll: float = 0.01,
    n: int | None = None,
    raw: bool = False,
) -> Iterator[bytes]:
    """`tail --follow` of `ds`, stopping once `until()` is true or after `seconds` (a broken test cannot hang)."""
    end = time.monotonic() + seconds
    stop = lambda: until() or time.monotonic() > end  # noqa: E731
    return tail(ds.log_path, ds.name, cursor_path=cursor, follow=True, poll=poll, stop=stop, n=n, raw=raw)


def followed_while_adding(dataset: Dataset, count: int, *, n: int | None = None, raw: bool = False) -> list[bytes]:
    """What following the log printed until `count` lines, while another writer adds a sequence half a
    second after it started."""
    got: list[bytes] = []
    stream = following(dataset, until=lambda: len(got) >= count, seconds=10, n=n, raw=raw)
    later = threading.Timer(0.5, lambda: add(Dataset.open(dataset.root, dataset.name), "TTAA"))
    later.start()
    try:
        got.extend(stream)
    finally:
        later.join()
    return got


@pytest.fixture
def cursor_file(tmp_path: Path) -> Path:
    return tmp_path / "watcher.cursor"


# -- resume -----------------------------------------------------------------------------------------
def test_cursor_resume_delivers_every_event_once_byte_exact(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT", "GGCC")
    first = consume(dataset, cursor_file)
    assert first == log_lines(dataset) and len(first) == 3
    add(dataset, "TTAA", "CAGT")
    second = consume(dataset, cursor_file)
    assert second == log_lines(dataset)[3:]
    assert [json.loads(line)["seq"] for line in second] == [4, 5]
    assert consume(dataset, cursor_file) == []
    assert b"".join(first + second) == dataset.log_path.read_bytes()


def test_cursor_file_records_the_last_delivered_line(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT")
    consume(dataset, cursor_file)
    cursor = load_cursor(cursor_file)
    last = json.loads(log_lines(dataset)[-1])
    assert cursor == Cursor(dataset="demo/ds", seq=2, offset=dataset.log_path.stat().st_size, hash=last["hash"])


def test_cursor_n_limits_a_run_to_the_oldest_events_without_gaps(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT", "GGCC", "TTAA", "CAGT")
    batches = [consume(dataset, cursor_file, n=2) for _ in range(4)]
    assert [len(batch) for batch in batches] == [2, 2, 1, 0]
    assert [line for batch in batches for line in batch] == log_lines(dataset)


def test_cursor_redelivers_a_line_the_consumer_did_not_acknowledge(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT", "GGCC")
    lines = log_lines(dataset)
    stream = tail(dataset.log_path, dataset.name, cursor_path=cursor_file)
    assert next(stream) == lines[0]
    assert next(stream) == lines[1]  # asking for line 2 acknowledges line 1
    stream.close()  # the consumer dies holding line 2: at-least-once, it comes again
    assert consume(dataset, cursor_file) == lines[1:]


def test_read_since_yields_verified_records_after_the_cursor(dataset: Dataset) -> None:
    add(dataset, "ACGT", "GGCC")
    lines = list(read_since(dataset.log_path, Cursor.start(dataset.name)))
    assert [line.record.action for line in lines] == ["init", "import_rows", "import_rows"]
    after_first = Cursor.after(lines[0], dataset=dataset.name)
    assert [line.seq for line in read_since(dataset.log_path, after_first)] == [2, 3]


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.sampled_from([0, 1, 7, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, 150_000]), max_size=4))
def test_read_line_before_finds_every_line_whatever_its_length(tmp_path_factory: pytest.TempPathFactory,
                                                                lengths: list[int]) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("lines") / "log"
    lines = [bytes([65 + k % 26]) * n for k, n in enumerate(lengths)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    offset = 0
    for line in lines:
        end = offset + len(line) + 1
        assert read_line_before(path, end) == (offset, line)
        if line:
            assert read_line_before(path, end - 1) is None  # inside a line, not at its end
        offset = end


def test_read_line_before_finds_the_line_ending_at_an_offset(dataset: Dataset) -> None:
    add(dataset, "ACGT")
    lines = log_lines(dataset)
    end = len(lines[0]) + len(lines[1])
    assert read_line_before(dataset.log_path, end) == (len(lines[0]), lines[1][:-1])
    assert read_line_before(dataset.log_path, len(lines[0])) == (0, lines[0][:-1])
    assert read_line_before(dataset.log_path, end - 1) is None  # not a line end
    assert read_line_before(dataset.log_path, end + 10**6) is None  # past the end of the file


# -- torn tails -------------------------------------------------------------------------------------
def test_cursor_never_delivers_a_torn_tail_and_resumes_after_quarantine(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT")
    assert len(consume(dataset, cursor_file)) == 2
    with dataset.log_path.open("ab") as fh:
        fh.write(b'{"event_version":1,"timestamp_utc":"2024-')  # a writer died mid-line
    assert consume(dataset, cursor_file) == []
    add(dataset, "GGCC")  # the next writer quarantines the fragment, then appends
    new = consume(dataset, cursor_file)
    assert new == log_lines(dataset)[2:] and len(new) == 1
    assert json.loads(new[0])["action"] == "import_rows"
    assert dataset.verify().ok


# -- truncation and rewrites ------------------------------------------------------------------------
def test_cursor_on_a_truncated_log_raises_integrity_error(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT", "GGCC")
    consume(dataset, cursor_file)
    size = dataset.log_path.stat().st_size
    os.truncate(dataset.log_path, size - len(log_lines(dataset)[-1]))  # drop the last consumed line
    with pytest.raises(IntegrityError, match="truncated") as info:
        consume(dataset, cursor_file)
    assert info.value.exit_code == EXIT_INTEGRITY
    assert "seq 3" in info.value.message and str(size) in info.value.message
    assert str(cursor_file) in (info.value.hint or "")


def test_cursor_on_a_recreated_dataset_raises_integrity_error(root: Path, cursor_file: Path) -> None:
    ds = Dataset.open(root, "demo/ds")
    ds.init(source="first")
    add(ds, "ACGT")
    consume(ds, cursor_file)
    offset = ds.log_path.stat().st_size
    shutil.rmtree(ds.dir)
    ds = Dataset.open(root, "demo/ds")
    ds.init(source="second")
    add(ds, "ACGT", "GGCC", "TTAA")
    assert ds.log_path.stat().st_size > offset  # longer than before: only the hash check can tell
    with pytest.raises(IntegrityError, match="rewritten"):
        consume(ds, cursor_file)
    assert load_cursor(cursor_file) is not None and load_cursor(cursor_file).seq == 2  # type: ignore[union-attr]


def test_cursor_detects_a_flipped_byte_in_the_last_consumed_line(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT")
    consume(dataset, cursor_file)
    data = bytearray(dataset.log_path.read_bytes())
    at = data.rfind(b'"timestamp_utc":"') + len(b'"timestamp_utc":"') + 3  # a digit of the year
    data[at] = ord("7") if data[at] != ord("7") else ord("8")
    dataset.log_path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="rewritten"):
        consume(dataset, cursor_file)


def test_cursor_detects_a_shifted_log(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT")
    consume(dataset, cursor_file)
    data = dataset.log_path.read_bytes()
    dataset.log_path.write_bytes(b" " + data[:-1])  # same size, every line moved by one byte
    with pytest.raises(IntegrityError, match="rewritten"):
        consume(dataset, cursor_file)


def test_check_cursor_rejects_a_cursor_whose_seq_does_not_match(dataset: Dataset) -> None:
    add(dataset, "ACGT")
    last = list(read_since(dataset.log_path, Cursor.start(dataset.name)))[-1]
    check_cursor(dataset.log_path, Cursor.after(last, dataset=dataset.name))
    wrong = Cursor(dataset=dataset.name, seq=last.seq + 1, offset=last.end, hash=last.hash)
    with pytest.raises(IntegrityError, match="seq 2"):
        check_cursor(dataset.log_path, wrong)


# -- cursor files ---------------------------------------------------------------------------------
def test_cursor_file_roundtrips_and_missing_means_none(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    assert load_cursor(path) is None
    cursor = Cursor(dataset="ns/ds", seq=3, offset=4000, hash="0123456789abcdef0123456789abcdef")
    save_cursor(path, cursor)
    assert load_cursor(path) == cursor
    assert json.loads(path.read_text()) == {
        "version": 1,
        "dataset": "ns/ds",
        "seq": 3,
        "offset": 4000,
        "hash": cursor.hash,
    }


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"",
        b'{"version":1,"dataset":"ns/ds"}',
        b'{"version":2,"dataset":"ns/ds","seq":0,"offset":0,"hash":""}',
        b'{"version":1,"dataset":"ns/ds","seq":-1,"offset":0,"hash":""}',
        b'{"version":1,"dataset":"ns/ds","seq":2,"offset":900,"hash":"not-a-hash"}',
        b'{"version":1,"dataset":"ns/ds","seq":0,"offset":12,"hash":""}',
        b'{"version":1,"dataset":"ns/ds","seq":"2","offset":900,"hash":"0123456789abcdef0123456789abcdef"}',
    ],
)
def test_garbled_cursor_file_raises_invalid_input(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    with pytest.raises(InvalidInput) as info:
        load_cursor(path)
    assert str(path) in info.value.message
    assert "Delete" in (info.value.hint or "")


def test_garbled_cursor_file_is_reported_before_any_line(dataset: Dataset, cursor_file: Path) -> None:
    cursor_file.write_text("{garbled")
    with pytest.raises(InvalidInput):
        tail(dataset.log_path, dataset.name, cursor_path=cursor_file)


def test_cursor_of_another_dataset_is_rejected(root: Path, tmp_path: Path, cursor_file: Path) -> None:
    first, second = Dataset.open(root, "demo/a"), Dataset.open(root, "demo/b")
    for ds in (first, second):
        ds.init(source="test")
        add(ds, "ACGT")
    consume(first, cursor_file)
    with pytest.raises(InvalidInput, match="demo/a"):
        consume(second, cursor_file)
    cursor = load_cursor(cursor_file)
    assert cursor is not None
    with pytest.raises(IntegrityError):  # even if the names were made to agree, the hash would not
        check_cursor(second.log_path, cursor)


def test_cursor_cannot_be_combined_with_raw_output(dataset: Dataset, cursor_file: Path) -> None:
    with pytest.raises(InvalidInput, match="raw"):
        tail(dataset.log_path, dataset.name, cursor_path=cursor_file, raw=True)


# -- without a cursor -------------------------------------------------------------------------------
def test_tail_without_cursor_prints_the_last_n_lines(dataset: Dataset) -> None:
    add(dataset, "ACGT", "GGCC", "TTAA")
    lines = log_lines(dataset)
    assert list(tail(dataset.log_path, dataset.name, n=2)) == lines[-2:]
    assert list(tail(dataset.log_path, dataset.name)) == lines
    assert list(tail(dataset.log_path, dataset.name, n=2, raw=True)) == lines[-2:]


def test_tail_raw_shows_a_damaged_line_that_verified_output_refuses(dataset: Dataset) -> None:
    add(dataset, "ACGT")
    data = dataset.log_path.read_bytes().replace(b'"action":"init"', b'"action":"tini"')
    dataset.log_path.write_bytes(data)
    assert b"".join(tail(dataset.log_path, dataset.name, raw=True)) == data
    with pytest.raises(IntegrityError):
        list(tail(dataset.log_path, dataset.name))


def test_tail_raw_shows_a_final_line_that_lost_its_newline_as_verified_output_does(dataset: Dataset) -> None:
    add(dataset, "ACGT")
    lines = log_lines(dataset)
    os.truncate(dataset.log_path, dataset.log_path.stat().st_size - 1)  # committed: its hash verifies
    for raw in (False, True):
        assert list(tail(dataset.log_path, dataset.name, n=1, raw=raw)) == lines[-1:]
        assert list(tail(dataset.log_path, dataset.name, raw=raw)) == lines
    dataset.log_path.write_bytes(dataset.log_path.read_bytes()[:-10])  # a torn tail is still never shown
    assert list(tail(dataset.log_path, dataset.name, raw=True)) == lines[:-1]


def test_follow_raw_after_a_lost_newline_prints_each_later_line_once(dataset: Dataset) -> None:
    add(dataset, "ACGT")
    os.truncate(dataset.log_path, dataset.log_path.stat().st_size - 1)
    got = followed_while_adding(dataset, 2, n=1, raw=True)
    assert got == log_lines(dataset)[-2:]


# -- follow -----------------------------------------------------------------------------------------
def test_follow_with_cursor_picks_up_events_appended_by_another_thread(dataset: Dataset, cursor_file: Path) -> None:
    got: list[bytes] = []

    def writer() -> None:
        for sequence in ("ACGT", "GGCC", "TTAA"):
            time.sleep(0.05)
            add(Dataset.open(dataset.root, dataset.name), sequence)

    thread = threading.Thread(target=writer)
    stream = following(dataset, cursor=cursor_file, until=lambda: len(got) >= 4)
    thread.start()
    try:
        got.extend(stream)
    finally:
        thread.join()
    assert got == log_lines(dataset)
    assert load_cursor(cursor_file) == Cursor(
        dataset=dataset.name, seq=4, offset=dataset.log_path.stat().st_size, hash=json.loads(got[-1])["hash"]
    )


WRITER = """
import sys
from usr_es import Dataset
ds = Dataset.at(sys.argv[1])
for i, seq in enumerate(["ACGTAC", "GGCCTA", "TTAACG", "CAGTCA", "GATTAC"]):
    ds.add_sequences([seq], source=f"writer {i}")
"""


def test_follow_never_delivers_half_written_lines_of_another_process(dataset: Dataset, tmp_path: Path) -> None:
    env = {**os.environ, "USR_ES_TEST_SPLIT_APPEND": "1"}  # each append lands as two writes, 2 ms apart
    got: list[bytes] = []
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(dataset.dir)], env=env)
    try:
        stream = following(dataset, until=lambda: len(got) >= 6, poll=0.001, cursor=tmp_path / "c")  # from seq 1
        for line in stream:
            digest = line_digest(line[:-1])  # a whole line whose hash verifies: never half an append
            assert line.endswith(b"\n") and digest is not None and digest[0] == digest[1]
            got.append(line)
    finally:
        assert proc.wait(timeout=60) == 0
    assert got == log_lines(dataset)


def test_follow_raises_when_the_log_is_truncated_underneath(dataset: Dataset, cursor_file: Path) -> None:
    add(dataset, "ACGT")
    stream = following(dataset, cursor=cursor_file, seconds=10)  # a missed truncation ends it, not hangs
    assert [next(stream), next(stream)] == log_lines(dataset)
    os.truncate(dataset.log_path, 10)
    with pytest.raises(IntegrityError, match="truncated"):
        next(stream)
    assert load_cursor(cursor_file).seq == 2  # type: ignore[union-attr]


def test_follow_raises_when_the_dataset_is_recreated_underneath(root: Path, cursor_file: Path) -> None:
    ds = Dataset.open(root, "demo/ds")
    ds.init(source="first")
    stream = following(ds, seconds=10, n=1)
    assert json.loads(next(stream))["seq"] == 1
    shutil.rmtree(ds.dir)
    again = Dataset.open(root, "demo/ds")
    again.init(source="second, a longer source text so the new log is longer")
    add(again, "ACGT")
    with pytest.raises(IntegrityError):
        next(stream)


# -- docs/event-log.md ------------------------------------------------------------------------------
def doc_blocks(kind: str, language: str) -> list[str]:
    text = EVENT_LOG_DOC.read_text(encoding="utf-8")
    return [body for mark, lang, body in _BLOCK.findall(text) if mark == kind and lang == language]


def run_doc_block(body: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "doc_block.py"
    script.write_text(body, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_event_log_doc_describes_every_action_and_field() -> None:
    text = EVENT_LOG_DOC.read_text(encoding="utf-8")
    missing = [f"`{name}`" for name in ACTIONS.values() if f"| `{name}` |" not in text]
    missing += [f"`{name}`" for name in LogRecord.__struct_fields__ if f"| `{name}` |" not in text]
    missing += [f"`{cls.__struct_config__.tag}`" for cls in ACTIONS if f"`{cls.__struct_config__.tag}`" not in text]
    assert not missing, f"docs/event-log.md does not document: {missing}"


def test_event_log_doc_verify_snippet_accepts_a_real_log_and_rejects_a_tampered_one(
    dataset: Dataset, tmp_path: Path
) -> None:
    (snippet,) = [body for body in doc_blocks("run", "python") if "def verify_log" in body]
    add(dataset, "ACGT", "GGCC")
    with dataset.log_path.open("ab") as fh:
        fh.write(b'{"event_version":1,')  # a torn tail is not an event and not an error
    ok = run_doc_block(snippet, tmp_path, str(dataset.log_path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "3 events verified"
    data = dataset.log_path.read_bytes()
    tampered = tmp_path / "tampered.log"
    tampered.write_bytes(data.replace(b'"source":"test ACGT"', b'"source":"test TGCA"', 1))
    bad = run_doc_block(snippet, tmp_path, str(tampered))
    assert bad.returncode != 0 and "line 2" in bad.stderr


def test_event_log_doc_cursor_snippet_resumes_where_it_stopped(dataset: Dataset, tmp_path: Path) -> None:
    (snippet,) = [body for body in doc_blocks("run", "python") if "read_since" in body]
    add(dataset, "ACGT")
    first = run_doc_block(snippet, tmp_path, str(dataset.log_path))
    assert first.returncode == 0, first.stderr
    assert [line.split()[:2] for line in first.stdout.splitlines()] == [["1", "init"], ["2", "import_rows"]]
    add(dataset, "GGCC")
    second = run_doc_block(snippet, tmp_path, str(dataset.log_path))
    assert second.returncode == 0, second.stderr
    assert [line.split()[:2] for line in second.stdout.splitlines()] == [["3", "import_rows"]]


def test_event_log_doc_sample_line_is_a_valid_log_line() -> None:
    (line,) = doc_blocks("line", "json")
    raw = line.strip().encode()
    framed = line_digest(raw)
    assert framed is not None and framed[0] == framed[1], "the sample line's hash does not match its bytes"
    record = record_decoder.decode(raw)
    assert record.seq == 1 and record.prev == "0" * 32


def test_event_log_doc_annotated_records_decode_and_chain() -> None:
    records = [msgspec.json.decode(body.encode(), type=LogRecord) for body in doc_blocks("record", "json")]
    (line,) = doc_blocks("line", "json")
    assert len(records) >= 4
    assert msgspec.json.decode(line.encode()) == json.loads(doc_blocks("record", "json")[0])
    by_seq = {record.seq: record for record in records}
    for seq, record in by_seq.items():
        if seq - 1 in by_seq:
            assert record.prev == by_seq[seq - 1].hash, f"seq {seq} does not chain to seq {seq - 1}"
    assert {record.action for record in records} >= {"init", "import_rows", "attach", "tombstone", "state_set"}


@pytest.mark.parametrize("raw", [False, True], ids=["verified", "raw"])
def test_follow_starts_at_the_end_unless_n_asks_for_history(dataset: Dataset, raw: bool) -> None:
    add(dataset, "ACGT", "GGCC")
    history = log_lines(dataset)
    got = followed_while_adding(dataset, 1, raw=raw)
    assert got == log_lines(dataset)[len(history) :]  # only what was written after it started
    asked = following(dataset, n=2, seconds=0.3, raw=raw)
    assert list(asked) == log_lines(dataset)[-2:]
