#!/usr/bin/python3
"""Per-user persistent ext3 overlays for notebook containers: create once, check, grow safely.

    clusterhub-overlay ensure PATH --size-mib N [--owner UID:GID] [--home NAME] [--lock-fd FD] [--wait S]
    clusterhub-overlay check PATH
    clusterhub-overlay grow PATH --size-mib N

An overlay holds what a user changes in the container (`upper/` and `work/`, Apptainer's layout). It
is created on first use without root: a sparse file, `mkfs.ext3 -d` from a template directory owned
by the caller (with `upper/home/NAME` when the container's $HOME lives in the overlay), then linked
into place (never over an existing file). An existing overlay is never
reformatted or resized by `ensure`, whatever size is asked for; `grow` is the explicit way: it works on
a copy (fsck, resize2fs, fsck again) and renames the copy over the original only when all succeeded.
A damaged overlay makes `ensure` and `check` fail with exit code 3 and a message; the file is kept.

Every command takes the overlay's lock (an flock on PATH.lock) without waiting. clusterhub-startjob opens
PATH.lock and passes the descriptor (`ensure --lock-fd FD`): the lock `ensure` takes on it stays held for the
server's whole life, by the wrapper and the apptainer it starts (whose FUSE helpers may outlive the job by a
moment). So while a server runs, `grow` and `check` fail at once with exit code 4, naming the job that holds
the overlay, and never read or replace the file the server has mounted; a second server's `ensure` waits
--wait seconds for a server that is ending, then fails the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import time

EXIT_DAMAGED = 3
EXIT_BUSY = 4
MIN_SIZE_MIB = 64
MAX_SIZE_MIB = 16 * 1024 * 1024  # 16 TiB
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class OverlayError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, check=False)


def _tail(proc: subprocess.CompletedProcess, lines: int = 5) -> str:
    return " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-lines:])


def parse_owner(text: str | None) -> tuple[int, int]:
    if not text:
        return os.getuid(), os.getgid()
    uid, sep, gid = text.partition(":")
    if not (uid.isdigit() and (not sep or gid.isdigit())):
        raise OverlayError(f"--owner {text!r}: expected UID:GID as numbers")
    return int(uid), int(gid) if sep else int(uid)


def check_size(size_mib: int) -> int:
    if not MIN_SIZE_MIB <= size_mib <= MAX_SIZE_MIB:
        raise OverlayError(f"--size-mib {size_mib}: an overlay is {MIN_SIZE_MIB} MiB to {MAX_SIZE_MIB} MiB")
    return size_mib


def _parent(proc: str, pid: int) -> int:
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _ancestors(proc: str, pid: int) -> list[int]:
    """pid and the processes it descends from, nearest first."""
    chain: list[int] = []
    while pid > 0 and pid not in chain:
        chain.append(pid)
        pid = _parent(proc, pid)
    return chain


def _job_of(proc: str, pid: str) -> str:
    """`job N` for a process of a Slurm job (its or its nearest ancestor's environment or cgroup: the container's
    processes may have neither of their own), else `process PID`."""
    for each in _ancestors(proc, int(pid)):
        with contextlib.suppress(OSError), open(os.path.join(proc, str(each), "environ"), "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"SLURM_JOB_ID=") and item[13:].isdigit():
                    return f"job {item[13:].decode()}"
        cgroup = os.path.join(proc, str(each), "cgroup")
        with contextlib.suppress(OSError), open(cgroup, encoding="utf-8", errors="replace") as f:
            found = re.search(r"/job_(\d+)(/|$)", f.read(), re.M)
            if found:
                return f"job {found.group(1)}"
    return f"process {pid}"


def holders(lock: str, proc: str = "/proc", me: int | None = None) -> list[str]:
    """Who holds `lock` open (`job N`, else `process PID`), among the processes the caller may inspect (its
    own; root: all) on this node, leaving out the caller and its ancestors."""
    try:
        target = os.stat(lock)
    except OSError:
        return []
    mine = set(_ancestors(proc, os.getpid() if me is None else me))
    found: set[str] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit() or int(pid) in mine:
            continue
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.add(_job_of(proc, pid))
                break
    return sorted(found)


def busy_message(path: str, then: str, who: list[str]) -> str:
    """The sentence of a refusal: what holds the overlay (when this node can tell), and what to do."""
    held = f" ({', '.join(who)})" if who else " (or another clusterhub-overlay run)"
    first = "stop that server first" if then == "start this one" else "stop the server first"
    return f"{path} is in use by a running server{held}; {first}, then {then}"


@contextlib.contextmanager
def locked(path: str, then: str, lock_fd: int | None = None, wait: float = 0):
    """The overlay's exclusive lock (PATH.lock), taken without waiting (or within `wait` seconds): two spawns, a
    grow or a check never touch it at once. With lock_fd (a descriptor the caller opened on PATH.lock and keeps),
    the lock is taken on it and outlives this process: clusterhub-startjob holds it for the server's life."""
    lock = path + ".lock"
    if lock_fd is None:
        # read-only is enough for flock, so a lock file root once created still works for the owner
        fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    else:
        fd = lock_fd
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            same = False
        if not same:
            raise OverlayError(f"--lock-fd {lock_fd} is not open on {lock}")
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OverlayError(busy_message(path, then, holders(lock)), EXIT_BUSY) from None
                time.sleep(0.5)
        yield
    finally:
        if lock_fd is None:
            os.close(fd)


def fsck(path: str, repair: bool = False) -> subprocess.CompletedProcess:
    # -f: check even when marked clean; -n: read-only, answer no; -p would repair unattended
    return _run(["e2fsck", "-f", "-p" if repair else "-n", path])


def check(path: str) -> None:
    if not os.path.isfile(path):
        raise OverlayError(f"{path} does not exist")
    proc = fsck(path)
    # 0: clean; 1/2: errors corrected (cannot happen with -n); 4 and above: errors left, or operational
    if proc.returncode >= 4 or proc.returncode in (1, 2):
        raise OverlayError(
            f"overlay {path} is damaged (e2fsck: {_tail(proc)}); it was left as it is, so nothing in it is "
            "lost: ask the site's admins to repair it",
            EXIT_DAMAGED,
        )


def size_mib(path: str) -> int:
    return os.stat(path).st_size // (1024 * 1024)


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def check_home(name: str | None) -> str | None:
    if name is not None and not (name and set(name) <= _NAME_CHARS and name[0] not in ".-"):
        raise OverlayError(f"--home {name!r}: a user name of lower-case letters, digits, '.', '_' or '-'")
    return name


def create(path: str, size: int, owner: tuple[int, int], home: str | None = None) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    uid, gid = owner
    with tempfile.TemporaryDirectory(prefix=".overlay-template-", dir=directory) as template:
        subs = ["upper", "work"] + (
            [os.path.join("upper", "home"), os.path.join("upper", "home", home)] if home else []
        )
        for sub in subs:
            os.mkdir(os.path.join(template, sub), 0o755)
            if os.getuid() == 0:
                os.chown(os.path.join(template, sub), uid, gid)
        fd, temp = tempfile.mkstemp(prefix=".overlay-new-", dir=directory)
        try:
            os.ftruncate(fd, size * 1024 * 1024)  # sparse: the disk fills as the user writes
            os.close(fd)
            fd = -1
            proc = _run(["mkfs.ext3", "-q", "-F", "-E", f"root_owner={uid}:{gid}", "-d", template, temp])
            if proc.returncode != 0:
                raise OverlayError(f"mkfs.ext3 failed for {path}: {_tail(proc)}")
            os.chmod(temp, 0o600)
            if os.getuid() == 0:
                os.chown(temp, uid, gid)
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)  # fails if the overlay appeared meanwhile: never replace one
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(temp)


def ensure(
    path: str,
    size: int,
    owner: tuple[int, int],
    home: str | None = None,
    *,
    lock_fd: int | None = None,
    wait: float = 0,
) -> str:
    """Create the overlay if it is missing; otherwise check it. Returns what was done. With lock_fd the lock
    stays held after this returns, for as long as the caller keeps the descriptor open."""
    check_size(size)
    check_home(home)
    with locked(path, "start this one", lock_fd, wait):
        if os.path.exists(path):
            check(path)
            have = size_mib(path)
            if have < size:
                return f"kept {path} ({have} MiB; the site now gives {size} MiB: `clusterhub-overlay grow` adds room)"
            return f"kept {path} ({have} MiB)"
        create(path, size, owner, home)
        return f"created {path} ({size} MiB)"


def grow(path: str, size: int) -> str:
    check_size(size)
    with locked(path, "grow it"):
        check(path)
        have = size_mib(path)
        if size < have:
            raise OverlayError(f"{path} is {have} MiB; shrinking to {size} MiB is not supported")
        if size == have:
            return f"{path} is already {have} MiB"
        directory = os.path.dirname(os.path.abspath(path))
        fd, temp = tempfile.mkstemp(prefix=".overlay-grow-", dir=directory)
        os.close(fd)
        try:
            proc = _run(["cp", "--sparse=always", "--preserve=mode,ownership", path, temp])
            if proc.returncode != 0:
                raise OverlayError(f"copying {path} failed: {_tail(proc)}")
            for step in (
                fsck(temp, repair=True),
                _run(["resize2fs", temp, f"{size}M"]),
                fsck(temp),
            ):
                if step.returncode not in (0, 1):
                    raise OverlayError(
                        f"growing {path} failed ({' '.join(step.args[:1])}: {_tail(step)}); the overlay is unchanged"
                    )
            os.replace(temp, path)  # same directory: atomic
            temp = ""
        finally:
            if temp:
                os.unlink(temp)
        return f"grew {path} from {have} to {size} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterhub-overlay", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_ensure = sub.add_parser("ensure", help="create the overlay if missing, else check it")
    p_ensure.add_argument("path")
    p_ensure.add_argument("--size-mib", type=int, required=True)
    p_ensure.add_argument("--owner", help="UID:GID of the overlay's root (default: the caller)")
    p_ensure.add_argument("--home", help="create /home/NAME in the overlay (the container's $HOME)")
    p_ensure.add_argument(
        "--lock-fd",
        type=int,
        help="a descriptor open on PATH.lock that the caller keeps for the server's life: the lock stays held",
    )
    p_ensure.add_argument(
        "--wait", type=float, default=0, help="seconds to wait for the lock (a server of this overlay that is ending)"
    )
    p_check = sub.add_parser("check", help="read-only file system check")
    p_check.add_argument("path")
    p_grow = sub.add_parser("grow", help="enlarge on a copy, swapped in only on success")
    p_grow.add_argument("path")
    p_grow.add_argument("--size-mib", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            print(
                ensure(
                    args.path, args.size_mib, parse_owner(args.owner), args.home, lock_fd=args.lock_fd, wait=args.wait
                )
            )
        elif args.command == "check":
            with locked(args.path, "check it"):
                check(args.path)
            print(f"{args.path} is clean")
        else:
            print(grow(args.path, args.size_mib))
    except OverlayError as exc:
        print(f"clusterhub-overlay: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
