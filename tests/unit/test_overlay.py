"""clusterhub-overlay with the real e2fsprogs: create once, never reformat, grow on a copy, refuse damage."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import clusterhub_overlay as ov
import pytest

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext3", path=ov.ENV["PATH"]) is None, reason="no e2fsprogs")


def debugfs(image: Path, request: str, write: bool = False) -> str:
    argv = ["debugfs", *(["-w"] if write else []), "-R", request, str(image)]
    return subprocess.run(argv, capture_output=True, text=True, env=ov.ENV, check=True).stdout


def put(image: Path, tmp_path: Path, name: str, text: str) -> None:
    src = tmp_path / "src.txt"
    src.write_text(text)
    debugfs(image, f"write {src} upper/{name}", write=True)


def get(image: Path, name: str) -> str:
    return debugfs(image, f"cat upper/{name}")


def test_ensure_creates_a_sparse_ext3_overlay_with_apptainer_layout(tmp_path):
    image = tmp_path / "alice.img"
    assert ov.main(["ensure", str(image), "--size-mib", "1024"]) == 0
    assert image.stat().st_size == 1024 * 1024 * 1024
    assert image.stat().st_blocks * 512 < 64 * 1024 * 1024, "sparse: the disk fills as the user writes"
    assert oct(image.stat().st_mode & 0o777) == "0o600"
    listing = debugfs(image, "ls -l /")
    for sub in ("upper", "work"):
        line = next(row for row in listing.splitlines() if row.split()[-1] == sub)
        assert line.split()[3:5] == [str(os.getuid()), str(os.getgid())]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".overlay-")], "no temporary left"


@pytest.mark.skipif(os.getuid() != 0, reason="setting another owner needs root")
def test_root_creates_an_overlay_owned_by_the_user(tmp_path):
    image = tmp_path / "bob.img"
    ov.ensure(str(image), 256, (2002, 2002))
    assert (image.stat().st_uid, image.stat().st_gid) == (2002, 2002)
    upper = next(row for row in debugfs(image, "ls -l /").splitlines() if row.split()[-1] == "upper")
    assert upper.split()[3:5] == ["2002", "2002"]


def test_a_new_size_never_reformats_and_grow_keeps_the_files(tmp_path):
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    put(image, tmp_path, "keep.txt", "alice's work\n")
    inode_before = image.stat().st_ino
    # the site raises the size variable: ensure keeps the overlay as it is and says how to grow
    message = ov.ensure(str(image), 512, (os.getuid(), os.getgid()))
    assert "kept" in message and "grow" in message
    assert image.stat().st_ino == inode_before and ov.size_mib(str(image)) == 256
    assert get(image, "keep.txt") == "alice's work\n"
    # growing is explicit, and swaps in a checked copy
    assert "grew" in ov.grow(str(image), 512)
    assert ov.size_mib(str(image)) == 512
    assert get(image, "keep.txt") == "alice's work\n"
    ov.check(str(image))
    assert "already" in ov.grow(str(image), 512)


def test_shrinking_and_silly_sizes_are_refused(tmp_path):
    image = tmp_path / "a.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    with pytest.raises(ov.OverlayError, match="shrinking to 128 MiB is not supported"):
        ov.grow(str(image), 128)
    with pytest.raises(ov.OverlayError, match="--size-mib 10: an overlay is 64 MiB"):
        ov.ensure(str(tmp_path / "b.img"), 10, (0, 0))
    assert not (tmp_path / "b.img").exists()


def test_a_damaged_overlay_stops_with_a_message_and_is_kept(tmp_path, capsys):
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    debugfs(image, "clri <2>", write=True)  # wipe the root directory's inode
    damaged = image.read_bytes()
    assert ov.main(["ensure", str(image), "--size-mib", "256"]) == ov.EXIT_DAMAGED
    err = capsys.readouterr().err
    assert "is damaged" in err and "nothing in it is lost" in err
    assert image.read_bytes() == damaged, "left exactly as it was"
    assert ov.main(["grow", str(image), "--size-mib", "512"]) == ov.EXIT_DAMAGED
    assert image.read_bytes() == damaged


def test_an_overlay_in_use_is_not_grown(tmp_path, capsys):
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    fd = os.open(str(image) + ".lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert ov.main(["grow", str(image), "--size-mib", "512"]) == ov.EXIT_BUSY
        assert "is in use" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert ov.size_mib(str(image)) == 256


def test_the_home_directory_can_live_in_the_overlay(tmp_path):
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 128, (os.getuid(), os.getgid()), home="alice")
    assert "alice" in debugfs(image, "ls upper/home")
    with pytest.raises(ov.OverlayError, match=r"--home '\.\./etc'"):
        ov.ensure(str(tmp_path / "x.img"), 128, (0, 0), home="../etc")


def test_owner_parsing():
    assert ov.parse_owner("2001:2002") == (2001, 2002)
    assert ov.parse_owner("2001") == (2001, 2001)
    with pytest.raises(ov.OverlayError, match="expected UID:GID"):
        ov.parse_owner("alice")
