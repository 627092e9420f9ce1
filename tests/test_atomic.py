import errno
import os
import stat

import pytest

from facecloak.atomic import atomic_output, check_output_path, write_atomic
from facecloak.errors import OutputError


def _leftovers(folder, *keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_write_replaces_the_target_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content" and _leftovers(tmp_path) == ["out.bin"]


def test_a_failure_keeps_the_old_target_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as file:
        file.write(b"half of it")
        raise RuntimeError("the encoder crashed")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_os_errors_become_one_line_output_errors(tmp_path, code):
    with pytest.raises(OutputError, match=f"cannot write .*new.png: {os.strerror(code)}") as info, \
            atomic_output(tmp_path / "new.png") as file:
        file.write(b"x")
        raise OSError(code, os.strerror(code))
    assert info.value.exit_code == 12 and "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_temp_files_are_unique_per_write(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as first, atomic_output(target) as second:  # e.g. two processes at once
        first.write(b"first")
        second.write(b"second")
        assert len(_leftovers(tmp_path)) == 2
    assert target.read_bytes() == b"first" and _leftovers(tmp_path) == ["out.bin"]


def test_permissions_follow_the_request_and_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "secret.fcmask", b"s", permissions=0o600)
        write_atomic(tmp_path / "photo.png", b"p")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.fcmask").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "photo.png").stat().st_mode) == 0o644


def test_output_paths_are_checked_up_front(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path / "dir.png")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.png")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="file is not a folder"):
        check_output_path(tmp_path / "file" / "x.png")
    assert check_output_path(tmp_path / "x.png") == tmp_path / "x.png"
