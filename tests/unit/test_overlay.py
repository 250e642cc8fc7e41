"""clusterhub-overlay with the real e2fsprogs: create once, never reformat, grow on a copy, refuse damage."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clusterhub import overlay as ov

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
        assert f"{image} is in use by a running server" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert ov.size_mib(str(image)) == 256


SERVER = """
exec {lock}<"$1.lock"
python3 "$2" ensure "$1" --size-mib 256 --lock-fd "$lock" >/dev/null || exit 9
echo started
exec sleep 60
"""


@pytest.fixture
def running_server(tmp_path):
    """A stand-in for clusterhub-startjob in job 4242: it opens the lock file, lets `ensure` lock it on that
    descriptor, then lives on (as the wrapper and apptainer do while the server runs) holding it."""
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    env = {**os.environ, "SLURM_JOB_ID": "4242"}
    server = subprocess.Popen(
        ["bash", "-c", SERVER, "server", str(image), ov.__file__], env=env, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout.readline().strip() == "started"
    yield image
    server.kill()
    server.wait()


def test_the_lock_ensure_takes_for_the_wrapper_is_held_for_the_servers_life(running_server, capsys, monkeypatch):
    image = running_server
    before = (image.stat().st_ino, image.stat().st_size, image.read_bytes())
    # the damage check never reads a live overlay: grow and check stop at the lock, before any e2fsck
    monkeypatch.setattr(ov, "fsck", lambda *a, **k: pytest.fail("e2fsck ran on a live overlay"))
    assert ov.main(["grow", str(image), "--size-mib", "512"]) == ov.EXIT_BUSY
    assert capsys.readouterr().err.strip() == (
        f"clusterhub-overlay: {image} is in use by a running server (job 4242); stop the server first, then grow it"
    )
    assert ov.main(["check", str(image)]) == ov.EXIT_BUSY
    assert "stop the server first, then check it" in capsys.readouterr().err
    # a second server on the same overlay (another job of the same user) is refused too
    fd = os.open(str(image) + ".lock", os.O_RDONLY)
    try:
        with pytest.raises(ov.OverlayError, match=r"\(job 4242\); stop that server first, then start this one"):
            ov.ensure(str(image), 256, (os.getuid(), os.getgid()), lock_fd=fd)
    finally:
        os.close(fd)
    assert (image.stat().st_ino, image.stat().st_size, image.read_bytes()) == before, "the overlay is unchanged"


def test_after_the_server_ends_grow_works(tmp_path):
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    fd = os.open(str(image) + ".lock", os.O_RDONLY)
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()), lock_fd=fd)
    with pytest.raises(ov.OverlayError, match="in use"):
        ov.grow(str(image), 512)
    os.close(fd)  # the server's processes are gone: so is the lock
    assert "grew" in ov.grow(str(image), 512)
    ov.check(str(image))


def test_a_start_waits_for_a_server_that_is_ending(tmp_path):
    """A restart right after a stop: the old server's FUSE helpers may hold the overlay a moment longer."""
    image = tmp_path / "alice.img"
    ov.ensure(str(image), 256, (os.getuid(), os.getgid()))
    ending = subprocess.Popen(["flock", "-x", str(image) + ".lock", "sleep", "1"])
    time.sleep(0.3)
    fd = os.open(str(image) + ".lock", os.O_RDONLY)
    try:
        with pytest.raises(ov.OverlayError, match="in use"):
            ov.ensure(str(image), 256, (os.getuid(), os.getgid()), lock_fd=fd)
        assert "kept" in ov.ensure(str(image), 256, (os.getuid(), os.getgid()), lock_fd=fd, wait=10)
    finally:
        os.close(fd)
        ending.wait()


def test_a_lock_descriptor_on_another_file_is_refused(tmp_path):
    image = tmp_path / "alice.img"
    other = tmp_path / "other"
    other.write_text("")
    (tmp_path / "alice.img.lock").write_text("")
    fd = os.open(str(other), os.O_RDONLY)
    try:
        with pytest.raises(ov.OverlayError, match=f"--lock-fd {fd} is not open on {image}.lock"):
            ov.ensure(str(image), 256, (os.getuid(), os.getgid()), lock_fd=fd)
    finally:
        os.close(fd)
    assert not image.exists()


def test_holders_name_the_job_from_the_environment_or_the_cgroup(tmp_path):
    lock = tmp_path / "a.img.lock"
    lock.write_text("")
    proc = tmp_path / "proc"
    for pid, ppid, environ, cgroup in (
        ("101", 1, b"HOME=/x\0SLURM_JOB_ID=77\0", ""),
        ("102", 1, b"", "0::/system.slice/slurmstepd.scope/job_78/step_batch/user/task_0\n"),
        ("103", 1, b"", "0::/user.slice\n"),
        ("107", 101, b"", ""),  # in job 77's container: neither of its own, its parent's
        ("104", 1, b"SLURM_JOB_ID=79\0", ""),  # the wrapper that passed --lock-fd: an ancestor, left out
        ("105", 104, b"SLURM_JOB_ID=79\0", ""),  # the caller itself
    ):
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "fd" / "3").symlink_to(lock)
        (proc / pid / "environ").write_bytes(environ)
        (proc / pid / "cgroup").write_text(cgroup)
        (proc / pid / "stat").write_text(f"{pid} (python3 (x)) S {ppid} {pid} {pid} 0 -1\n")
    (proc / "106" / "fd").mkdir(parents=True)
    (proc / "106" / "fd" / "0").symlink_to(tmp_path / "elsewhere")
    assert ov.holders(str(lock), proc=str(proc), me=105) == ["job 77", "job 78", "process 103"]
    assert ov.busy_message("/o.img", "grow it", ["job 77"]) == (
        "/o.img is in use by a running server (job 77); stop the server first, then grow it"
    )
    assert "(or another clusterhub-overlay run)" in ov.busy_message("/o.img", "grow it", [])


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
