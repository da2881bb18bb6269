"""Writes refuse a filesystem whose flock locks other machines do not see, read from a fake mount table."""

from __future__ import annotations

from pathlib import Path

import pytest

from usr_es import Dataset
from usr_es.errors import UnsafeLocks
from usr_es.mounts import lock_problem, mount_of, mount_table

TABLE = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
nas:/export {base}/nfs-nolock nfs rw,vers=3,nolock,proto=tcp 0 0
nas:/export {base}/nfs-ok nfs4 rw,vers=4.2,proto=tcp 0 0
nas:/export {base}/nfs-local nfs4 rw,vers=4.2,local_lock=flock 0 0
mds@tcp:/scratch {base}/lustre-flock lustre rw,flock,lazystatfs 0 0
mds@tcp:/scratch {base}/lustre-plain lustre rw,lazystatfs 0 0
mds@tcp:/scratch {base}/lustre-local lustre rw,localflock 0 0
//srv/share {base}/with\\040space cifs rw,nobrl 0 0
"""


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mounts"
    path.write_text(TABLE.format(base=tmp_path))
    monkeypatch.setenv("USR_MOUNT_TABLE", str(path))
    monkeypatch.delenv("USR_ALLOW_UNSAFE_LOCKS", raising=False)
    return path


@pytest.mark.parametrize(
    ("folder", "unsafe"),
    [
        ("nfs-nolock", "nolock"),
        ("nfs-ok", None),
        ("nfs-local", "local_lock=flock"),
        ("lustre-flock", None),
        ("lustre-plain", "without `flock`"),
        ("lustre-local", "localflock"),
        ("with space", "nobrl"),
        ("elsewhere", None),
    ],
)
def test_each_mount_is_judged_by_its_type_and_options(
    tmp_path: Path, table: Path, folder: str, unsafe: str | None
) -> None:
    mount = mount_of(tmp_path / folder / "root" / "demo", mount_table())
    assert mount is not None
    problem = lock_problem(mount)
    assert (problem is None) is (unsafe is None)
    if unsafe is not None:
        assert problem is not None and unsafe in problem


def test_a_write_on_an_nfs_nolock_mount_is_refused_unless_overridden(
    tmp_path: Path, table: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = Dataset.open(root, "demo/ds")
    ds.init(source="test")
    table.write_text(TABLE.format(base=tmp_path) + f"nas:/x {root} nfs rw,nolock 0 0\n")
    before = ds.log_path.read_bytes()
    with pytest.raises(UnsafeLocks, match=f"on {root} .*nolock") as refused:
        ds.add_sequences(["ACGTACGT"])
    assert refused.value.hint is not None and "USR_ALLOW_UNSAFE_LOCKS=1" in refused.value.hint
    assert ds.log_path.read_bytes() == before
    monkeypatch.setenv("USR_ALLOW_UNSAFE_LOCKS", "1")
    assert ds.add_sequences(["ACGTACGT"]).seq == 2


def test_a_missing_mount_table_refuses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USR_MOUNT_TABLE", str(tmp_path / "absent"))
    assert mount_table() == []
