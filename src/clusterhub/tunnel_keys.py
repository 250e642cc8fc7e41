#!/usr/bin/python3 -I
"""Per-server tunnel keys (remote HPC mode): each server's job gets an SSH key of its own that may open
exactly one -R on the hub, to the port the hub chose for that server.

Standard library only. Two sides, one file:

- the hub (ClusterRemoteSpawner) generates a key pair per spawn (`generate`), passes the private half in the
  job's environment as it does the server's API token, and publishes the public half as `<port>.pub` in the
  keys directory (`publish`); it withdraws it when the server's state is cleared (`withdraw`);
- sshd on the hub asks this file, installed as the tunnel account's AuthorizedKeysCommand
  (`clusterhub-tunnel-keys USER`, run as a dedicated unprivileged account), for the keys it accepts: one
  line per published key, each limited by key options to forwarding only, from the HPC nodes, to the hub
  API and to a -R on its own port (`authorized_lines`). What the directory holds is never trusted as
  options: a file whose name is not a port of the tunnel range, or whose text is not one ed25519 public
  key, is skipped.

A job that holds its own key cannot listen on another server's port, even while that server's tunnel is
being reopened and the port is free.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

# The job script's variable with the private half (clusterhub-startjob writes it to a 0600 file and unsets it).
JOB_VARIABLE = "CLUSTERHUB_TUNNEL_IDENTITY"
PUBLIC_KEY = re.compile(r"^ssh-ed25519 [A-Za-z0-9+/]{60,100}={0,2}$")
KEY_FILE = re.compile(r"^([1-9][0-9]{0,4})\.pub$")
MAX_KEY_FILE = 4096


def generate(comment: str) -> tuple[str, str]:
    """A fresh ed25519 key pair: (the OpenSSH private key's text, the public key `ssh-ed25519 BASE64`)."""
    with tempfile.TemporaryDirectory(prefix="clusterhub-key-") as scratch:
        path = Path(scratch, "key")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        private = path.read_text()
        public = " ".join(Path(scratch, "key.pub").read_text().split()[:2])
    if not PUBLIC_KEY.match(public):
        raise ValueError(f"ssh-keygen wrote no ed25519 public key: {public[:80]!r}")
    return private, public


def publish(directory: str, port: int, public: str) -> None:
    """The public key that may listen on the hub's 127.0.0.1:port, replacing any earlier one (atomically)."""
    if not PUBLIC_KEY.match(public):
        raise ValueError("not an ed25519 public key")
    target = Path(directory, f"{int(port)}.pub")
    fd, scratch = tempfile.mkstemp(dir=directory, prefix=".new-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(public + "\n")
        os.chmod(scratch, 0o644)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def withdraw(directory: str, port: int) -> None:
    """No key may listen on port any more (a connection already open keeps its forward until it closes)."""
    Path(directory, f"{int(port)}.pub").unlink(missing_ok=True)


def _in_ranges(port: int, ranges: list[list[int]]) -> bool:
    return any(low <= port <= high for low, high in ranges)


def _read_key(path: Path) -> str | None:
    """The file's key, read without following a link; None for anything but one ed25519 public key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(text) > MAX_KEY_FILE:
        return None
    key = text.decode("ascii", errors="replace").strip()
    return key if PUBLIC_KEY.match(key) else None


def authorized_lines(config: dict) -> list[str]:
    """authorized_keys lines for every published key: forwarding only, from the HPC nodes, -L to the hub API
    only and -R to the key's own port on the hub's loopback only."""
    directory = Path(config["dir"])
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    source = ",".join(config["from"])
    lines = []
    for name in names:
        match = KEY_FILE.match(name)
        if not match or not _in_ranges(int(match[1]), config["ports"]):
            continue
        key = _read_key(directory / name)
        if key is None:
            continue
        lines.append(
            f'restrict,port-forwarding,command="/usr/sbin/nologin",from="{source}",'
            f'permitlisten="127.0.0.1:{int(match[1])}",permitopen="127.0.0.1:{int(config["api_port"])}" {key}'
        )
    return lines


def main(argv: list[str]) -> int:
    """sshd's AuthorizedKeysCommand: `clusterhub-tunnel-keys USER CONFIG` (CONFIG: the JSON settings the
    tunnel_user role writes, root's); keys only for the tunnel account."""
    if len(argv) != 2:
        print("usage: clusterhub-tunnel-keys USER CONFIG", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        config = json.load(f)
    if argv[0] != config["user"]:
        return 0
    for line in authorized_lines(config):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
