"""`.events.log` framing: line hashes, chain checks, torn tails, quarantine and command lookup."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import xxhash

from usr_es.commands import ImportSequences, InitDataset
from usr_es.errors import CorruptLog, UnsupportedEvent
from usr_es.events import (
    GENESIS_HASH,
    Actor,
    DatasetInitialized,
    DatasetRef,
    Fingerprint,
    LogRecord,
    SequencesImported,
    record_decoder,
)
from usr_es.log import (
    QUARANTINE_FILE,
    Scan,
    encode_line,
    find_command,
    iter_lines,
    line_digest,
    quarantine_tail,
    read_lines,
)


def make_record(seq: int, prev: str, *, command_id: str | None = None, **overrides: Any) -> LogRecord:
    """A plausible log record for `seq` (init for seq 1, an empty import after)."""
    stamp = f"2024-01-01T00:00:{seq:02d}.000000Z"
    if seq == 1:
        command: Any = InitDataset(source="test")
        event: Any = DatasetInitialized(name="demo/ds", created_at=stamp, source="test")
        action = "init"
    else:
        command = ImportSequences(fmt="rows")
        event = SequencesImported(rows=0, skipped=0, source="", created_at=stamp)
        action = "import_rows"
    fields: dict[str, Any] = dict(
        timestamp_utc=stamp,
        action=action,
        dataset=DatasetRef(name="demo/ds", root="/data"),
        args={"source": "test"},
        metrics={},
        artifacts={},
        maintenance={},
        fingerprint=Fingerprint(rows=0, cols=7, size_bytes=100),
        registry_hash=None,
        actor=Actor(tool="pytest", run_id="run-1", host="localhost", pid=1),
        version="0.1.0",
        seq=seq,
        event_id=f"{seq:032x}",
        command_id=command_id or f"cmd-{seq}",
        command=command,
        event=event,
        payload=None,
        prev=prev,
    )
    fields.update(overrides)
    return LogRecord(**fields)


def chain(count: int) -> list[bytes]:
    """`count` correctly chained log lines (with newlines)."""
    lines: list[bytes] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        line, prev = encode_line(make_record(seq, prev))
        lines.append(line)
    return lines


def frame(body: dict[str, Any]) -> bytes:
    """Frame an arbitrary JSON object as a log line: `hash` last, xxh3-128 of the line with `"hash":""`."""
    body = {k: v for k, v in body.items() if k != "hash"}
    body["hash"] = ""
    raw = msgspec.json.encode(body)
    digest = xxhash.xxh3_128_hexdigest(raw)
    return raw[:-2] + digest.encode() + b'"}\n'


def write_log(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def test_encode_line_round_trips_through_decoder_and_digest() -> None:
    record = make_record(1, GENESIS_HASH)
    line, digest = encode_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    raw = line[:-1]
    assert line_digest(raw) == (digest, digest)
    decoded = record_decoder.decode(raw)
    assert decoded.hash == digest
    assert msgspec.structs.replace(decoded, hash="") == record
    assert encode_line(msgspec.structs.replace(decoded, hash="")) == (line, digest)


def test_encode_line_puts_hash_last_and_notify_fields_first() -> None:
    line, digest = encode_line(make_record(1, GENESIS_HASH))
    keys = list(json.loads(line))
    assert keys[0] == "event_version"
    assert keys[-1] == "hash"
    assert line.endswith(f'"hash":"{digest}"}}\n'.encode())


def test_encode_line_rejects_a_record_that_already_has_a_hash() -> None:
    record = msgspec.structs.replace(make_record(1, GENESIS_HASH), hash="f" * 32)
    with pytest.raises(ValueError):
        encode_line(record)


def test_line_digest_returns_none_for_unframed_bytes() -> None:
    assert line_digest(b"") is None
    assert line_digest(b'{"a":1}') is None


def test_iter_lines_yields_verified_chain(tmp_path: Path) -> None:
    lines = chain(3)
    log = write_log(tmp_path / "log", lines)
    got, scan = read_lines(log)
    assert [line.seq for line in got] == [1, 2, 3]
    assert [line.offset for line in got] == [0, len(lines[0]), len(lines[0]) + len(lines[1])]
    assert got[-1].end == log.stat().st_size == scan.size
    assert scan.seq == 3 and scan.hash == got[-1].hash
    assert scan.torn_offset is None and scan.torn_bytes == 0
    assert got[1].record.prev == got[0].hash


def test_iter_lines_until_seq_stops_early(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log", chain(4))
    got, scan = read_lines(log, until_seq=2)
    assert [line.seq for line in got] == [1, 2]
    assert scan.seq == 2


def test_iter_lines_from_an_anchor(tmp_path: Path) -> None:
    lines = chain(3)
    log = write_log(tmp_path / "log", lines)
    first = next(iter_lines(log))
    rest = list(iter_lines(log, start_offset=first.end, start_seq=1, start_hash=first.hash))
    assert [line.seq for line in rest] == [2, 3]


def test_iter_lines_detects_flipped_byte_with_line_and_offset(tmp_path: Path) -> None:
    lines = chain(3)
    damaged = bytearray(lines[1])
    position = damaged.index(b'"pytest"') + 2
    damaged[position] ^= 0x01  # "pytest" -> "pxtest": still valid JSON, wrong hash
    log = write_log(tmp_path / "log", [lines[0], bytes(damaged), lines[2]])
    with pytest.raises(CorruptLog) as info:
        list(iter_lines(log))
    assert info.value.line == 2
    assert info.value.offset == len(lines[0])
    assert "line 2" in str(info.value) and f"byte offset {len(lines[0])}" in str(info.value)


def test_iter_lines_yields_good_lines_before_the_bad_one(tmp_path: Path) -> None:
    lines = chain(3)
    log = write_log(tmp_path / "log", [lines[0], lines[1][:40] + b"X" + lines[1][41:], lines[2]])
    seen = []
    with pytest.raises(CorruptLog):
        for line in iter_lines(log):
            seen.append(line.seq)
    assert seen == [1]


def test_iter_lines_detects_bad_json_line(tmp_path: Path) -> None:
    lines = chain(2)
    log = write_log(tmp_path / "log", [lines[0], b"{not json at all\n", lines[1]])
    with pytest.raises(CorruptLog, match="JSON") as info:
        list(iter_lines(log))
    assert info.value.line == 2


def test_iter_lines_detects_json_line_without_hash(tmp_path: Path) -> None:
    lines = chain(1)
    log = write_log(tmp_path / "log", [lines[0], b'{"seq":2}\n'])
    with pytest.raises(CorruptLog) as info:
        list(iter_lines(log))
    assert info.value.line == 2


def test_iter_lines_detects_seq_gap(tmp_path: Path) -> None:
    first, prev = encode_line(make_record(1, GENESIS_HASH))
    third, _ = encode_line(make_record(3, prev))
    log = write_log(tmp_path / "log", [first, third])
    with pytest.raises(CorruptLog, match="seq") as info:
        list(iter_lines(log))
    assert (info.value.line, info.value.offset) == (2, len(first))


def test_iter_lines_detects_broken_prev_chain(tmp_path: Path) -> None:
    first, _ = encode_line(make_record(1, GENESIS_HASH))
    second, _ = encode_line(make_record(2, "a" * 32))
    log = write_log(tmp_path / "log", [first, second])
    with pytest.raises(CorruptLog, match="chain") as info:
        list(iter_lines(log))
    assert info.value.line == 2


def test_iter_lines_detects_first_line_not_chained_to_genesis(tmp_path: Path) -> None:
    first, _ = encode_line(make_record(1, "b" * 32))
    with pytest.raises(CorruptLog):
        list(iter_lines(write_log(tmp_path / "log", [first])))


def test_iter_lines_detects_removed_line(tmp_path: Path) -> None:
    lines = chain(3)
    log = write_log(tmp_path / "log", [lines[0], lines[2]])
    with pytest.raises(CorruptLog):
        list(iter_lines(log))


def test_iter_lines_detects_blank_line(tmp_path: Path) -> None:
    lines = chain(2)
    log = write_log(tmp_path / "log", [lines[0], b"\n", lines[1]])
    with pytest.raises(CorruptLog) as info:
        list(iter_lines(log))
    assert info.value.line == 2


def test_iter_lines_does_not_yield_torn_tail(tmp_path: Path) -> None:
    lines = chain(3)
    fragment = lines[2][: len(lines[2]) // 2]
    log = write_log(tmp_path / "log", [lines[0], lines[1], fragment])
    scan = Scan()
    got = list(iter_lines(log, scan=scan))
    assert [line.seq for line in got] == [1, 2]
    assert scan.torn_offset == len(lines[0]) + len(lines[1])
    assert scan.torn_bytes == len(fragment)
    assert scan.seq == 2 and scan.size == scan.torn_offset


def test_quarantine_tail_moves_fragment_and_truncates(tmp_path: Path) -> None:
    lines = chain(2)
    fragment = b'{"event_version":1,"timestamp_'
    log = write_log(tmp_path / ".events.log", [*lines, fragment])
    _, scan = read_lines(log)
    moved = quarantine_tail(log, scan)
    assert moved == len(fragment)
    assert log.read_bytes() == b"".join(lines)
    notes = [json.loads(line) for line in (tmp_path / QUARANTINE_FILE).read_text().splitlines()]
    assert len(notes) == 1
    assert base64.b64decode(notes[0]["bytes_b64"]) == fragment
    assert notes[0]["offset"] == len(b"".join(lines))
    assert notes[0]["size_bytes"] == len(fragment)
    assert notes[0]["xxh3_128"] == xxhash.xxh3_128_hexdigest(fragment)
    assert scan.torn_offset is None
    _, rescan = read_lines(log)
    assert rescan.seq == 2 and rescan.torn_offset is None


def test_quarantine_tail_without_torn_tail_does_nothing(tmp_path: Path) -> None:
    log = write_log(tmp_path / ".events.log", chain(2))
    before = log.read_bytes()
    _, scan = read_lines(log)
    assert quarantine_tail(log, scan) == 0
    assert log.read_bytes() == before
    assert not (tmp_path / QUARANTINE_FILE).exists()


def test_find_command_finds_recorded_command_id(tmp_path: Path) -> None:
    first, prev = encode_line(make_record(1, GENESIS_HASH, command_id="alpha"))
    second, _ = encode_line(make_record(2, prev, command_id="beta"))
    log = write_log(tmp_path / "log", [first, second])
    found = find_command(log, "beta")
    assert found is not None and found.seq == 2 and found.record.command_id == "beta"
    assert find_command(log, "gamma") is None
    assert find_command(log, "bet") is None
    assert find_command(tmp_path / "missing", "beta") is None


def test_iter_lines_rejects_unknown_event_tag(tmp_path: Path) -> None:
    first, prev = encode_line(make_record(1, GENESIS_HASH))
    second, _ = encode_line(make_record(2, prev))
    body = json.loads(second)
    body["event"]["type"] = "sequences_teleported"
    log = write_log(tmp_path / "log", [first, frame(body)])
    with pytest.raises(UnsupportedEvent):
        list(iter_lines(log))


def test_iter_lines_rejects_unknown_command_tag(tmp_path: Path) -> None:
    first, _ = encode_line(make_record(1, GENESIS_HASH))
    body = json.loads(first)
    body["command"]["type"] = "drop_everything"
    with pytest.raises(UnsupportedEvent):
        list(iter_lines(write_log(tmp_path / "log", [frame(body)])))


@pytest.mark.parametrize("version", [0, 2])
def test_iter_lines_rejects_other_event_versions(tmp_path: Path, version: int) -> None:
    line, _ = encode_line(make_record(1, GENESIS_HASH, event_version=version))
    with pytest.raises(UnsupportedEvent, match="event_version"):
        list(iter_lines(write_log(tmp_path / "log", [line])))


def test_frame_helper_matches_encode_line() -> None:
    line, _ = encode_line(make_record(1, GENESIS_HASH))
    assert frame(json.loads(line)) == line
