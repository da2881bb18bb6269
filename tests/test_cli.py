"""The `usr` command line: JSON output, error lines and exit codes, help texts, retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_SEQUENCES
from typer.testing import CliRunner

from usr_es import Dataset, compute_id
from usr_es.cli import app

runner = CliRunner()


def usr(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `usr --root ROOT ARGS` in-process; assert success and return the result."""
    result = runner.invoke(app, ["--root", str(root), *args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def usr_json(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run a data command with `--format json` and return its `data` after checking the envelope."""
    result = usr(root, *args, "--format", "json", env=env)
    doc = json.loads(result.stdout)
    assert doc["usr_output_version"] == 1
    return doc["data"]


def usr_process(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m usr_es ARGS` in a child process, as a user would (errors go through main())."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "usr_es", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def log_of(root: Path) -> bytes:
    return Dataset.open(root, "demo/ds").log_path.read_bytes()


# -- namespaces ---------------------------------------------------------------------------------
def test_cli_namespace_register_list_show(tmp_path: Path) -> None:
    root = tmp_path / "nsroot"
    result = usr(root, "namespace", "register", "mock", "--columns", "mock__score:float64,mock__t:timestamp[us, UTC]")
    assert "mock" in result.stdout
    listed = usr_json(root, "namespace", "list")
    assert {row["namespace"] for row in listed} == {"mock", "usr_state"}
    assert next(r for r in listed if r["namespace"] == "mock")["columns"] == ["mock__score", "mock__t"]
    shown = usr_json(root, "namespace", "show", "mock")
    assert shown["name"] == "mock"
    assert shown["columns"] == [
        {"name": "mock__score", "type": "float64"},
        {"name": "mock__t", "type": "timestamp[us, UTC]"},
    ]


def test_cli_namespace_register_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "nsroot"
    usr(root, "namespace", "register", "mock", "--columns", "mock__a:int64")
    usr(root, "namespace", "register", "mock", "--columns", "mock__b:string", "--overwrite")
    assert [c["name"] for c in usr_json(root, "namespace", "show", "mock")["columns"]] == ["mock__b"]


# -- lifecycle and reads ------------------------------------------------------------------------
def test_cli_init_and_import_receipts(tmp_path: Path, demo_csv: Path) -> None:
    root = tmp_path / "r"
    usr(root, "namespace", "register", "mock", "--columns", "mock__score:float64")
    init = usr_json(root, "init", "demo/ds", "--source", "s")
    assert (init["seq"], init["action"], init["dataset"]) == (1, "init", "demo/ds")
    imported = usr_json(root, "import", "demo/ds", "--from", "csv", "--path", str(demo_csv))
    assert (imported["seq"], imported["action"]) == (2, "import_rows")
    assert imported["metrics"]["rows_written"] == 6 and imported["replayed"] is False


def test_cli_ls_info_head_schema_json(cli_root: Path, demo_csv: Path) -> None:
    listed = usr_json(cli_root, "ls")
    assert [(d["dataset"], d["rows"], d["head_seq"]) for d in listed] == [("demo/ds", 6, 2)]
    info = usr_json(cli_root, "info", "demo/ds")
    assert info["rows"] == 6 and info["head_seq"] == 2 and info["projection_lag"] == 0
    head = usr_json(cli_root, "head", "demo/ds", "-n", "3")
    assert [row["sequence"] for row in head] == DEMO_SEQUENCES[:3]
    assert head[0]["source"] == str(demo_csv)
    assert head[0]["created_at"].endswith("Z")
    some = usr_json(cli_root, "head", "demo/ds", "--columns", "id,length")
    assert list(some[0]) == ["id", "length"] and len(some) == 6
    schema = usr_json(cli_root, "schema", "demo/ds")
    assert {c["name"]: c["type"] for c in schema}["created_at"] == "timestamp[us, UTC]"


def test_cli_plain_output_for_head(cli_root: Path) -> None:
    result = usr(cli_root, "head", "demo/ds", "-n", "2", "--columns", "sequence", "--format", "plain")
    assert result.stdout.splitlines() == ["sequence", *DEMO_SEQUENCES[:2]]


def test_cli_events_tail_returns_last_event(cli_root: Path) -> None:
    result = usr(cli_root, "events", "tail", "demo/ds", "--n", "1", "--format", "json")
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    last = json.loads(log_of(cli_root).splitlines()[-1])
    assert event == last
    assert event["seq"] == 2 and event["action"] == "import_rows"
    everything = usr(cli_root, "events", "tail", "demo/ds").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in everything] == [1, 2]


def test_cli_replay_rebuild_verify(cli_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "past"
    replayed = usr_json(cli_root, "replay", "demo/ds", "--until", "1", "--out", str(out))
    assert replayed["seq"] == 1 and replayed["rows"] == 0
    assert usr_json(cli_root, "verify", str(out))["ok"] is True
    rebuilt = usr_json(cli_root, "rebuild", "demo/ds")
    assert rebuilt["seq"] == 2 and rebuilt["rows"] == 6
    report = usr_json(cli_root, "verify", "demo/ds")
    assert report["ok"] is True and report["problems"] == []


def test_cli_verify_exits_6_after_tampering(cli_root: Path) -> None:
    log = Dataset.open(cli_root, "demo/ds").log_path
    data = log.read_bytes()
    log.write_bytes(data.replace(b'"source":"cli test"', b'"source":"cli tesT"', 1))
    result = runner.invoke(app, ["--root", str(cli_root), "verify", "demo/ds", "--format", "json"])
    assert result.exit_code == 6
    report = json.loads(result.stdout)["data"]
    assert report["ok"] is False and "line 1" in report["problems"][0]


def test_cli_verify_fix_rebuilds_a_deleted_projection_and_exits_0(cli_root: Path) -> None:
    records = Dataset.open(cli_root, "demo/ds").records_path
    original = records.read_bytes()
    records.unlink()
    failed = runner.invoke(app, ["--root", str(cli_root), "verify", "demo/ds"])
    assert failed.exit_code == 6 and "usr verify --fix" in failed.stderr
    assert not records.exists()
    fixed = usr_json(cli_root, "verify", "demo/ds", "--fix")
    assert fixed["ok"] is True and fixed["repaired"] == ["records.parquet"]
    assert records.read_bytes() == original


# -- idempotent retries -------------------------------------------------------------------------
def test_cli_command_id_option_gives_idempotent_retry(cli_root: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.csv"
    extra.write_text("sequence\nACGTACGTAA\n")
    args = ["import", "demo/ds", "--from", "csv", "--path", str(extra), "--command-id", "job-17"]
    first = usr_json(cli_root, *args)
    log = log_of(cli_root)
    again = usr_json(cli_root, *args)
    assert first["replayed"] is False and again["replayed"] is True
    assert again["event_id"] == first["event_id"] and again["seq"] == first["seq"] == 3
    assert log_of(cli_root) == log


def test_cli_command_id_env_gives_idempotent_retry(cli_root: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.csv"
    extra.write_text("sequence\nTTTTGGGGCC\n")
    args = ["import", "demo/ds", "--from", "csv", "--path", str(extra)]
    first = usr_json(cli_root, *args, env={"USR_COMMAND_ID": "env-job-1"})
    log = log_of(cli_root)
    again = usr_json(cli_root, *args, env={"USR_COMMAND_ID": "env-job-1"})
    assert again["replayed"] is True and again["event_id"] == first["event_id"]
    assert json.loads(log.splitlines()[-1])["command_id"] == "env-job-1"
    assert log_of(cli_root) == log


def test_cli_expected_seq_option(cli_root: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.csv"
    extra.write_text("sequence\nCCCCAAAAGG\n")
    done = usr_json(cli_root, "import", "demo/ds", "--from", "csv", "--path", str(extra), "--expected-seq", "2")
    assert done["seq"] == 3


# -- help ---------------------------------------------------------------------------------------
HELP_COMMANDS = [
    [],
    ["namespace"],
    ["namespace", "register"],
    ["namespace", "list"],
    ["namespace", "show"],
    ["init"],
    ["import"],
    ["ls"],
    ["info"],
    ["head"],
    ["schema"],
    ["events"],
    ["events", "tail"],
    ["replay"],
    ["rebuild"],
    ["verify"],
    ["demo"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "usr")
def test_cli_help_has_example(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    assert "Example" in result.stdout


def test_cli_python_dash_m_help(tmp_path: Path) -> None:
    proc = usr_process(tmp_path, "--help")
    assert proc.returncode == 0
    assert "Usage" in proc.stdout and "Example" in proc.stdout
    assert proc.stderr == ""


# -- user errors --------------------------------------------------------------------------------
def assert_user_error(proc: subprocess.CompletedProcess[str], code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) in (1, 2), proc.stderr
    assert lines[0].startswith("error: ")
    assert sum(line.startswith("error:") for line in lines) == 1
    if len(lines) == 2:
        assert lines[1].startswith("hint: ")


ERROR_CASES: list[tuple[str, list[str], int]] = [
    ("duplicate_import", ["import", "demo/ds", "--from", "csv", "--path", "{csv}"], 2),
    ("bad_alphabet", ["import", "demo/ds", "--from", "csv", "--path", "{csv}", "--alphabet", "protein_20"], 2),
    ("invalid_id", ["init", "../escape"], 2),
    ("init_exists", ["init", "demo/ds"], 3),
    ("missing_dataset", ["info", "demo/ghost"], 4),
    ("missing_input", ["import", "demo/ds", "--from", "csv", "--path", "{missing}"], 4),
    ("stale_seq", ["import", "demo/ds", "--from", "csv", "--path", "{new}", "--expected-seq", "1"], 5),
    ("unknown_namespace", ["namespace", "show", "nope"], 4),
    ("bad_namespace", ["namespace", "register", "Bad", "--columns", "Bad__x:int64"], 2),
]


@pytest.mark.parametrize(("name", "args", "code"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_cli_user_errors_exit_codes(
    cli_root: Path, demo_csv: Path, tmp_path: Path, name: str, args: list[str], code: int
) -> None:
    new = tmp_path / "new.csv"
    new.write_text("sequence\nGATTACAGATTACA\n")
    values = {"csv": str(demo_csv), "missing": str(tmp_path / "missing.csv"), "new": str(new)}
    before = log_of(cli_root)
    registry = (cli_root / "registry.yaml").read_bytes()
    proc = usr_process(tmp_path, "--root", str(cli_root), *[a.format(**values) for a in args])
    assert_user_error(proc, code)
    assert log_of(cli_root) == before
    assert (cli_root / "registry.yaml").read_bytes() == registry
    assert not (tmp_path / "escape").exists()


def test_cli_verify_failure_exit_code_in_process(cli_root: Path, tmp_path: Path) -> None:
    log = Dataset.open(cli_root, "demo/ds").log_path
    log.write_bytes(log.read_bytes().replace(b'"action":"init"', b'"action":"Init"', 1))
    proc = usr_process(tmp_path, "--root", str(cli_root), "verify", "demo/ds")
    assert proc.returncode == 6
    assert "Traceback" not in proc.stderr
    assert "FAILED" in proc.stdout and "line 1" in proc.stdout


def test_cli_no_root_is_a_usage_error(tmp_path: Path) -> None:
    proc = usr_process(tmp_path, "ls")
    assert_user_error(proc, 2)


def test_the_usr_process_keeps_pandas_and_numpy_out_even_where_they_are_installed(cli_root: Path) -> None:
    pytest.importorskip("pandas")  # the dev extra installs both: without them there is nothing to keep out
    usr(cli_root, "init", "demo/pd")
    (cli_root / "one.csv").write_text("sequence\nACGTAC\n")
    usr(cli_root, "import", "demo/pd", "--from", "csv", "--path", str(cli_root / "one.csv"))
    usr(cli_root, "delete", "demo/pd", "--id", compute_id("dna", "ACGTAC"))  # `info` counts it: an Arrow scalar
    env = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    cmd = [sys.executable, "-X", "importtime", "-m", "usr_es", "--root", str(cli_root), "info", "demo/pd"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "deleted: 1" in done.stdout
    assert "pandas.core" not in done.stderr  # pyarrow would have imported it on its first Python value
    assert "numpy._core" not in done.stderr and "numpy.core" not in done.stderr  # ... and numpy on import


def test_the_usr_process_turns_python_values_into_arrow_without_importing_pandas_numpy_or_dateutil() -> None:
    pytest.importorskip("dateutil")  # pandas brings it: without it there is nothing to keep out
    probe = (
        "import sys\n"
        "from usr_es.cli import _without_unneeded\n"
        "_without_unneeded()\n"
        "import pyarrow as pa, pyarrow.compute as pc\n"
        "assert pc.equal(pa.array([1.5, 2.0]), 2.0).to_pylist() == [False, True]\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'dateutil') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the jemalloc preference applies on Linux")
@pytest.mark.parametrize(("preset", "expected"), [(None, "jemalloc"), ("system", "system")])
def test_the_usr_process_allocates_with_jemalloc_unless_a_pool_is_named(preset: str | None, expected: str) -> None:
    import pyarrow as pa

    if expected == "jemalloc" and "jemalloc" not in pa.supported_memory_backends():
        pytest.skip("this pyarrow build has no jemalloc")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    probe = (  # the console entry point runs (`usr --help`), then the process's pool is read
        "import sys\n"
        "from usr_es.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == expected


# -- usage errors and odd ids: one `error:` line and a hint, never the parser's own format ---------------
def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from usr_es.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["init", "-abc"], "'-abc' is not an option; if it is meant as a dataset id"),
        (["import", "-abc", "--from", "csv", "--path", "x.csv"], "'-abc' is not an option"),
        (["head", "demo/ds", "-n", "abc"], "Run `usr head --help`"),
        (["nosuch"], "Run `usr --help`"),
        (["init"], "Run `usr init --help`"),
    ],
)
def test_usage_errors_are_one_error_line_and_a_hint(
    cli_root: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, _, err = run_main(capsys, "--root", str(cli_root), *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ") and says in lines[1]


def test_an_over_long_dataset_id_is_a_clean_usage_error(cli_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command, *rest in (["init"], ["import", "--from", "csv", "--path", "x.csv"]):
        code, _, err = run_main(capsys, "--root", str(cli_root), command, "demo/" + "a" * 300, *rest)
        assert code == 2 and "is 300 characters; the limit is 128" in err


def test_export_with_a_default_file_name_too_long_for_the_file_system_asks_for_out(
    cli_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    longest = "a" * 128
    usr(cli_root, "init", f"{longest}/{longest}")
    code, _, err = run_main(
        capsys, "--root", str(cli_root), "export", f"{longest}/{longest}", "--fmt", "csv", "--out", str(tmp_path)
    )
    assert code == 2 and "too long" in err and "--out" in err


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--format", "json"],
        ["info", "demo/ds", "--format", "json"],
        ["head", "demo/ds", "-n", "2", "--format", "json"],
        ["state", "get", "demo/ds", "--id", "nope", "--format", "json"],
        ["info", "--help"],
        ["state", "--help"],
        ["infoo", "demo/ds"],
    ],
)
def test_the_entry_point_parses_like_the_whole_app(
    cli_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """`main` builds only the named command's parser: what it prints and exits with is the whole app's."""
    from usr_es import cli

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            cli.main(argv)
            code = 0
        except SystemExit as exited:
            code = int(exited.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    for root_args in (["--root", str(cli_root)], [f"--root={cli_root}"]):
        slim = run([*root_args, *args])
        with monkeypatch.context() as whole_app:
            whole_app.setattr(cli, "_app_for", lambda _: cli.app)
            assert run([*root_args, *args]) == slim
        assert slim[0] in (0, 2, 4) and (slim[0] == 0 or slim[2].startswith("error: ") or slim[1].startswith("Usage:"))


@pytest.mark.parametrize("when", ["before the write", "while its result is shown"])
def test_a_ctrl_c_outside_the_write_still_says_what_the_log_holds(
    cli_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    from usr_es.cli import writes

    def stop(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(writes, "existing_dataset" if when == "before the write" else "emit_receipt", stop)
    ds = Dataset.open(cli_root, "demo/ds")
    head = ds.info().head_seq
    some_id = ds.head(1).column("id")[0].as_py()
    code, out, err = run_main(capsys, "--root", str(cli_root), "delete", "demo/ds", "--id", some_id)
    assert code == 130 and out == ""
    if when == "before the write":
        assert ds.info().head_seq == head
        assert err.startswith("error: interrupted before anything was written to the log [NOT_COMMITTED]")
    else:
        assert ds.info().head_seq == head + 1
        assert err.startswith(f"error: interrupted after event seq {head + 1} of demo/ds was committed [COMMITTED]")


# -- the process's own end: output flushed before it exits ---------------------------------------
def _many_rows_root(tmp_path: Path, rows: int) -> Path:
    import random

    rng = random.Random(7)
    csv = tmp_path / "many.csv"
    csv.write_text("sequence\n" + "".join("".join(rng.choice("ACGT") for _ in range(60)) + "\n" for _ in range(rows)))
    root = tmp_path / "many"
    steps = (["namespace", "register", "mock", "--columns", "mock__score:float64"], ["init", "big/ds"])
    for args in (*steps, ["import", "big/ds", "--from", "csv", "--path", str(csv)]):
        assert usr_process(tmp_path, "--root", str(root), *args).returncode == 0
    return root


def test_a_large_output_reaches_the_reader_whole_before_the_process_ends(tmp_path: Path) -> None:
    root = _many_rows_root(tmp_path, 3000)
    proc = usr_process(tmp_path, "--root", str(root), "head", "big/ds", "-n", "3000", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) > 4 * 65536  # several pipe buffers' worth: the tail was written out at exit
    assert len(json.loads(proc.stdout)["data"]) == 3000
    failed = usr_process(tmp_path, "--root", str(root), "head", "big/none")
    assert_user_error(failed, 4)


def test_a_reader_that_leaves_early_gets_no_traceback_or_late_warning(tmp_path: Path) -> None:
    root = _many_rows_root(tmp_path, 3000)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    with subprocess.Popen(
        [sys.executable, "-m", "usr_es", "--root", str(root), "head", "big/ds", "-n", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(100)
        proc.stdout.close()  # `usr head ... | head -c 100`
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert code in (0, 1)
    assert err == "", err


def test_the_process_end_flushes_what_is_still_buffered_and_keeps_the_exit_code() -> None:
    probe = (
        "import sys\n"
        "from usr_es.cli import _leave\n"
        "sys.stdout.write('out' * 5)\n"  # small writes stay in the buffers until the end
        "sys.stderr.write('err')\n"
        "_leave(3)\n"
    )
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-c", probe], env=buffered, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out" * 5, "err")


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from usr_es import __version__

    proc = usr_process(tmp_path, "--version")
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, f"usr_es {__version__}", "")


def test_init_refuses_a_folder_holding_datasets_and_a_folder_inside_one(cli_root: Path, tmp_path: Path) -> None:
    over = usr_process(tmp_path, "--root", str(cli_root), "init", "demo")  # demo/ holds demo/ds
    assert_user_error(over, 2)
    assert "holds dataset(s) demo/ds" in over.stderr
    assert usr_process(tmp_path, "--root", str(cli_root), "init", "flat").returncode == 0
    inside = usr_process(tmp_path, "--root", str(cli_root), "init", "flat/inner")
    assert_user_error(inside, 2)
    assert "inside dataset flat" in inside.stderr
    assert not (cli_root / "demo" / ".events.log").exists()
    assert not (cli_root / "flat" / "inner").exists()
    assert [d.dataset for d in Dataset.list_all(cli_root)] == ["demo/ds", "flat"]


def test_a_dataset_inferred_from_the_current_folder_must_be_under_the_root_given(
    cli_root: Path, tmp_path: Path, demo_csv: Path
) -> None:
    other = tmp_path / "other"
    assert usr_process(tmp_path, "--root", str(other), "namespace", "register", "mock", "--columns",
                       "mock__score:float64").returncode == 0  # fmt: skip
    assert usr_process(tmp_path, "--root", str(other), "init", "demo/ds").returncode == 0
    inside = cli_root / "demo" / "ds"
    before = (inside / ".events.log").read_bytes(), (other / "demo" / "ds" / ".events.log").read_bytes()
    write = ["import", "--from", "csv", "--path", str(demo_csv), "--on-conflict", "skip"]
    for env in ({}, {"USR_ROOT": str(other)}):  # a root given by --root or by USR_ROOT
        given = ["--root", str(other)] if not env else []
        for args in (write, ["info", "--format", "json"]):
            refused = usr_process(inside, *given, *args, env=env)
            assert_user_error(refused, 2)
            assert f"not under the datasets root {other}" in refused.stderr
    assert ((inside / ".events.log").read_bytes(), (other / "demo" / "ds" / ".events.log").read_bytes()) == before
    # Inside the root it names, or with no root given, the folder is the dataset; `.` names it from anywhere.
    for given in (["--root", str(cli_root)], []):
        shown = usr_process(inside, *given, "info", "--format", "json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["data"]["rows"] == len(DEMO_SEQUENCES)
    by_path = usr_process(inside, "--root", str(other), "info", ".", "--format", "json")
    assert by_path.returncode == 0, by_path.stderr
    assert json.loads(by_path.stdout)["data"]["rows"] == len(DEMO_SEQUENCES)


def _on_a_terminal(cwd: Path, *args: str) -> str:
    """Run `python -m usr_es ARGS` with its stdout on a pseudo-terminal; what it printed there."""
    import pty

    master, slave = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("USR_")}
    with subprocess.Popen([sys.executable, "-m", "usr_es", *args], cwd=cwd, env=clean, stdout=slave) as child:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(timeout=60) == 0
    os.close(master)
    return b"".join(chunks).decode()


def test_no_rich_prints_plain_text_on_a_terminal_too(cli_root: Path, tmp_path: Path) -> None:
    rich = _on_a_terminal(tmp_path, "--root", str(cli_root), "ls")
    plain = _on_a_terminal(tmp_path, "--no-rich", "--root", str(cli_root), "ls")
    assert "\u2500" in rich or "\u2501" in rich  # a rich table's rules
    assert plain.splitlines()[0].split("\t")[:2] == ["dataset", "status"]
    assert "demo/ds\tok" in plain


def test_the_global_remotes_config_option_names_the_remotes_file(tmp_path: Path) -> None:
    config = tmp_path / "remotes.yaml"
    added = usr_process(tmp_path, "--remotes-config", str(config), "remotes", "add", "hpc", "--type", "local",
                        "--base-dir", str(tmp_path / "there"))  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = usr_process(tmp_path, "--remotes-config", str(config), "remotes", "list")
    assert (listed.returncode, listed.stdout) == (0, f"hpc\tlocal\t{tmp_path / 'there'}\tauth=batch\n")
    assert_user_error(usr_process(tmp_path, "remotes", "list"), 2)  # no $USR_REMOTES_PATH, no option


def test_multi_line_notes_keep_the_meta_md_header_readable(cli_root: Path, tmp_path: Path) -> None:
    import yaml

    notes = "first line\nsecond: line\n# not a comment"
    proc = usr_process(tmp_path, "--root", str(cli_root), "init", "demo/noted", "--notes", notes, "--source", "a: b")
    assert proc.returncode == 0, proc.stderr
    text = (cli_root / "demo" / "noted" / "meta.md").read_text()
    header = yaml.safe_load(text.split("\n\n", 1)[0])
    assert header["name"] == "demo/noted"
    assert (header["notes"], header["source"], header["schema"]) == (notes, "a: b", "USR v1")


def test_paths_and_ids_fail_by_one_rule(cli_root: Path, tmp_path: Path) -> None:
    """A file where a folder is needed or the reverse is a usage error (2); a missing path or record id is
    not found (4), for every command that names one."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    root = str(cli_root)
    cases = [
        (["--root", str(afile), "ls"], 2, "is a file, not a directory"),
        (["--root", root, "import", "demo/ds", "--from", "csv", "--path", str(tmp_path)], 2, "is a directory"),
        (["--root", root, "delete", "demo/ds", "--id-file", str(tmp_path)], 2, "is a directory"),
        (["--root", root, "replay", "demo/ds", "--until", "1", "--out", str(afile)], 2, "is a file, not a directory"),
        (["--root", root, "replay", "demo/ds", "--until", "1", "--out", str(afile / "sub")], 2, "is a file, not a"),
        (["--root", root, "export", "demo/ds", "--fmt", "csv", "--out", str(afile / "x.csv")], 2, "is a file, not a"),
        (["--root", root, "head", "missing.parquet"], 4, "Path not found: missing.parquet"),
        (["--root", root, "head", "./missing.parquet"], 4, "Path not found: ./missing.parquet"),
    ]
    unknown = "0" * 40
    for command in (["delete"], ["restore"], ["state", "set"], ["get"], ["state", "get"]):
        extra = ["--qc-status", "pass"] if command == ["state", "set"] else []
        cases.append(
            (["--root", root, *command, "demo/ds", "--id", unknown, *extra], 4, "not found in dataset demo/ds")
        )
    for args, code, says in cases:
        proc = usr_process(tmp_path, *args)
        assert_user_error(proc, code)
        assert says in proc.stderr, (args, proc.stderr)
    assert afile.read_text() == "x"


def test_namespace_register_starts_a_root_only_where_its_parent_exists_and_says_so(tmp_path: Path) -> None:
    typo = usr_process(
        tmp_path, "--root", str(tmp_path / "typo" / "root"), "namespace", "register", "m", "--columns", "m__x:int64"
    )
    assert_user_error(typo, 4)
    assert not (tmp_path / "typo").exists()
    fresh = usr_process(
        tmp_path, "--root", str(tmp_path / "root"), "namespace", "register", "m", "--columns", "m__x:int64"
    )
    assert fresh.returncode == 0, fresh.stderr
    assert f"Created datasets root {tmp_path / 'root'}" in fresh.stderr


# -- an input's own id column: each row's id must be its computed one, as in the original ---------------
MISMATCH = "error: 'id' mismatch for {n} row(s); ids must equal sha1(bio_type|sequence_norm)."


def _write_input(path: Path, fmt: str, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "csv":
        path.write_text("sequence,id\n" + "".join(f"{r['sequence']},{r['id']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_import_whose_id_column_is_not_the_computed_ids_exits_2_and_appends_nothing(
    cli_root: Path, tmp_path: Path, fmt: str
) -> None:
    rows = [
        {"sequence": "TTTTAAAACC", "id": "not-the-sha1"},
        {"sequence": "GGGGCCCCAA", "id": compute_id("dna", "GGGGCCCCAA")},
        {"sequence": "ACACACACGT", "id": compute_id("dna", "ACACACACGG")},
    ]
    path = _write_input(tmp_path / f"wrongid.{fmt}", fmt, rows)
    before = log_of(cli_root)
    proc = usr_process(tmp_path, "--root", str(cli_root), "import", "demo/ds", "--from", fmt, "--path", str(path))
    assert_user_error(proc, 2)
    error, hint = proc.stderr.splitlines()
    assert error == MISMATCH.format(n=2)
    assert "Rows: 1, 3" in hint and "'not-the-sha1'" in hint and compute_id("dna", "TTTTAAAACC") in hint
    assert "Drop the id column" in hint
    assert log_of(cli_root) == before


@pytest.mark.parametrize(("fmt", "blank"), [("csv", ""), ("csv", "  "), ("jsonl", None), ("parquet", None)])
def test_an_import_with_a_missing_or_empty_id_exits_2_and_appends_nothing(
    cli_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, blank: str | None
) -> None:
    rows = [{"sequence": "GGGGCCCCAA", "id": compute_id("dna", "GGGGCCCCAA")}, {"sequence": "TTTTAAAACC", "id": blank}]
    path = _write_input(tmp_path / f"blank.{fmt}", fmt, rows)
    before = log_of(cli_root)
    code, _, err = run_main(capsys, "--root", str(cli_root), "import", "demo/ds", "--from", fmt, "--path", str(path))
    assert code == 2
    assert err.splitlines()[0] == "error: 1 row(s) have missing/empty 'id' (rows: 2)."
    assert log_of(cli_root) == before


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_ids_exported_by_usr_import_into_a_fresh_dataset_unchanged(cli_root: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"export.{fmt}"
    usr(cli_root, "export", "demo/ds", "--fmt", fmt, "--out", str(out))
    usr(cli_root, "init", "demo/copy")
    usr(cli_root, "import", "demo/copy", "--from", fmt, "--path", str(out))
    original = Dataset.open(cli_root, "demo/ds").view(columns=["id", "sequence"])
    assert Dataset.open(cli_root, "demo/copy").view(columns=["id", "sequence"]) == original
    assert original.num_rows == len(DEMO_SEQUENCES)


def test_a_wrong_id_in_a_later_batch_refuses_the_whole_import_counting_every_batch(
    cli_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import usr_es.decide as decide_module

    monkeypatch.setattr(decide_module, "IMPORT_BATCH_ROWS", 2)
    sequences = ["AAAACCCCGG", "AAAACCCCGT", "AAAACCCCTA", "AAAACCCCTC", "AAAACCCCTG", "AAAACCCCTT", "AAAACCCCAA"]
    rows = [{"sequence": s, "id": compute_id("dna", s)} for s in sequences]
    rows[4]["id"] = rows[4]["id"].upper()  # compared as given: the hex digits' case counts
    rows[6]["id"] = " " + rows[6]["id"]
    path = _write_input(tmp_path / "later.csv", "csv", rows)
    before = log_of(cli_root)
    code, _, err = run_main(capsys, "--root", str(cli_root), "import", "demo/ds", "--from", "csv", "--path", str(path))
    assert code == 2
    assert err.splitlines()[0] == MISMATCH.format(n=2)
    assert "Rows: 5, 7" in err
    assert log_of(cli_root) == before
    assert not list(Dataset.open(cli_root, "demo/ds").dir.rglob(".tmp-*"))
    rows[4]["id"], rows[6]["id"] = compute_id("dna", sequences[4]), compute_id("dna", sequences[6])
    usr(cli_root, "import", "demo/ds", "--from", "csv", "--path", str(_write_input(path, "csv", rows)))
    assert Dataset.open(cli_root, "demo/ds").info().rows == len(DEMO_SEQUENCES) + len(sequences)
