"""External data of a run: files or directories the job copies in before the notebook runs (inputs) and writes back
after it ran (outputs, also after the notebook failed), each handed to the notebook as a parameter holding its
local path.

A place is `HOST:PATH` on one of the site's data hosts, reached over SSH with the user's own key (~/.ssh, which
the job reads as the user), or `webdav:PATH` in the user's own WebDAV space (mounted by the webdav_client role's
helper, whose password file is the user's, 0600). No secret passes through the service, the job script, the job's
environment or the database: only host names and paths do. The copying is done on the node by the standard-library
program COPY below (rsync over ssh, or cp in the mounted space), with every word an argument, never shell text.

Where the copies lie, in the run's directory: data-<task>/<name>/<the source's last path component> for an input,
data-<task>/<name>/ (empty at the start) for an output. A sweep's task <t> writes its output back into PATH/<t>/.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from clusterhub.hub.request import OptionsError
from clusterhub.runs.params import NAME

DIRECTIONS = ("input", "output")
WEBDAV = "webdav"  # the pseudo-host of the user's WebDAV space
MAX_ITEMS = 16
MAX_PATH = 1024
HOST_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
# the job's exit status when an input or output could not be copied (the notebook's own failures exit 1)
EXIT_DATA = 3
# ... and when the script stopped the notebook before the time limit, to write the outputs back in time
EXIT_TIME_LIMIT = 4
# how long before the time limit Slurm tells the script of a run with outputs (sbatch --signal=B:USR1@...): rsync
# then has this long, not just KillWait's seconds after the limit
WRITE_BACK_LEAD_S = 180


@dataclass(frozen=True)
class DataItem:
    """One declared input or output, checked: name (the notebook's variable), direction, host (a data host's
    name, or 'webdav') and path (normalised: no trailing '/', relative paths start with './' for ssh)."""

    name: str
    direction: str
    host: str
    path: str

    def label(self) -> str:
        return f"{self.host}:{self.path}"


def check_path(path: str, host: str) -> str:
    """A place's path: printable, at most MAX_PATH characters, no '..' component, not an option; WebDAV paths are
    relative to the user's space, SSH paths absolute or relative to the home on the data host."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or re.search(r"[\x00-\x1f\x7f]", path):
        raise OptionsError(f"data path {str(path)[:60]!r} must be 1 to {MAX_PATH} printable characters")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OptionsError(f"data path {path[:60]!r} must not contain '..'")
    if not parts:
        raise OptionsError(f"data path {path[:60]!r} names no file or directory")
    if parts[0].startswith("-"):
        raise OptionsError(f"data path {path[:60]!r} must not start with '-'")
    joined = "/".join(parts)
    if host == WEBDAV:
        return joined
    return f"/{joined}" if path.startswith("/") else f"./{joined}"


def parse_place(text: str) -> tuple[str, str]:
    """`HOST:PATH` (the CLI's and the page's way to name a place) into (host, path)."""
    host, sep, path = str(text).partition(":")
    if not sep or not host or not path:
        raise OptionsError(f"data place {str(text)[:60]!r} must be HOST:PATH (a data host, or webdav:PATH)")
    return host.strip(), path


def parse_assignments(pairs: list[str], direction: str) -> list[dict]:
    """`NAME=HOST:PATH` words (the CLI's --input and --output) into the API's data items."""
    items = []
    for pair in pairs:
        name, sep, place = pair.partition("=")
        if not sep:
            raise OptionsError(f"{direction} {pair[:60]!r} must be NAME=HOST:PATH")
        host, path = parse_place(place)
        items.append({"name": name.strip(), "direction": direction, "host": host, "path": path})
    return items


def host_names(hosts: list[dict], webdav: bool) -> list[str]:
    """What a place's HOST may be: the site's data hosts, and webdav where the nodes mount the users' spaces."""
    return [h["name"] for h in hosts] + ([WEBDAV] if webdav else [])


def check_data(items, hosts: list[dict], webdav: bool, parameters: dict) -> tuple[DataItem, ...]:
    """The data items a request declares (a list of {name, direction, host, path}), checked against the site's data
    hosts and whether WebDAV spaces are mounted on the nodes; their names must not be parameters' names."""
    if items in (None, ""):
        return ()
    if not isinstance(items, list):
        raise OptionsError("data must be a list of {name, direction, host, path}")
    if len(items) > MAX_ITEMS:
        raise OptionsError(f"a run declares at most {MAX_ITEMS} inputs and outputs")
    known = host_names(hosts, webdav)
    checked: list[DataItem] = []
    for item in items:
        if not isinstance(item, dict):
            raise OptionsError("each data item must be {name, direction, host, path}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise OptionsError(
                f"data name {str(name)[:40]!r} must be an identifier (it becomes the notebook's variable)"
            )
        if name in parameters or name in {c.name for c in checked}:
            raise OptionsError(f"data name {name} is also a parameter or another data item's name")
        direction = item.get("direction")
        if direction not in DIRECTIONS:
            raise OptionsError(f"data {name}: direction must be input or output")
        host = item.get("host")
        if host not in known:
            allowed = ", ".join(known) or "none: this site declares no data hosts"
            raise OptionsError(f"data {name}: host {str(host)[:40]!r} is not a data host of this site ({allowed})")
        checked.append(DataItem(name, direction, host, check_path(item.get("path"), host)))
    return tuple(checked)


def job_spec(items: tuple[DataItem, ...], hosts: list[dict], webdav: dict | None, sweep: bool) -> dict:
    """What COPY reads on the node: each item with its data host's address and port, and the WebDAV mount."""
    by_name = {h["name"]: h for h in hosts}
    return {
        "items": [
            asdict(item)
            | (
                {}
                if item.host == WEBDAV
                else {"address": by_name[item.host]["address"], "port": int(by_name[item.host].get("port", 22))}
            )
            for item in items
        ],
        "webdav": webdav or {},
        "sweep": sweep,
    }


def check_hosts(hosts) -> list[dict]:
    """The site's data hosts (the service's settings): [{name, address, port}], names and addresses plain."""
    checked = []
    for host in hosts or []:
        name, address, port = host.get("name"), host.get("address", host.get("name")), host.get("port", 22)
        if not isinstance(name, str) or not HOST_NAME_RE.match(name) or name == WEBDAV:
            raise ValueError(f"data host name {name!r} must be a lower-case host name other than {WEBDAV}")
        if not isinstance(address, str) or not ADDRESS_RE.match(address):
            raise ValueError(f"data host {name}: address {address!r} must be a host name or an IPv4 address")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"data host {name}: port {port!r} must be 1 to 65535")
        checked.append({"name": name, "address": address, "port": port})
    return checked


# Run on the node by the node's own python3, as the job's user: `python3 - fetch|store SPEC TASK USER HOME`. fetch
# copies the inputs and makes the outputs' empty directories, then writes data-<task>.json ({name: local path}) for
# papermill; store writes the outputs back. One sentence per failure, then exit 3.
COPY = r"""import json, os, subprocess, sys
action, spec_file, task, user, home = sys.argv[1:6]
with open(spec_file, encoding="utf-8") as f:
    spec = json.load(f)
root = os.path.abspath(f"data-{task}")
webdav = spec.get("webdav") or {}
mounted = []
COPY_SECONDS = 3600

def fail(message):
    print(f"clusterhub run: {message}", file=sys.stderr, flush=True)
    unmount()
    sys.exit(3)

def run(argv):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COPY_SECONDS)
    except subprocess.TimeoutExpired:
        return 124, f"the copy took over {COPY_SECONDS // 60} minutes and was stopped"
    # the first line says why (rsync's later lines are its summary and the broken pipe that follows)
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()
             and not line.startswith(("Warning:", "rsync error:"))]
    return done.returncode, (lines[0] if lines else f"exit status {done.returncode}")

def space():
    mount = os.path.join(home, webdav["mount_dir"])
    if not mounted and not os.path.ismount(mount):
        code, why = run([webdav["mount"], user, mount])
        if code:
            fail(f"your WebDAV space could not be mounted: {why}")
        mounted.append(mount)
    return mount

def unmount():
    while mounted:
        run([webdav["umount"], mounted.pop()])

def ssh(item):
    return ["rsync", "-a", "--protect-args", "-e",
            f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20 -p {int(item['port'])}"]

def advice(item):
    if item["host"] == "webdav":
        return "check the path in your WebDAV space"
    return f"check the path, and that your SSH key (~/.ssh) is authorized on {item['host']}"

paths = {}
for item in spec["items"]:
    local = os.path.join(root, item["name"])
    output = item["direction"] == "output"
    target = f"{item['path']}/{task}" if output and spec["sweep"] else item["path"]
    if action == "fetch":
        os.makedirs(local, mode=0o700, exist_ok=True)
        if output:
            paths[item["name"]] = local
            continue
        paths[item["name"]] = os.path.join(local, os.path.basename(item["path"]))
        if item["host"] == "webdav":
            argv = ["cp", "-r", "--", os.path.join(space(), item["path"]), local + "/"]
        else:
            argv = ssh(item) + ["--", f"{item['address']}:{item['path']}", local + "/"]
    elif output:
        if item["host"] == "webdav":
            dest = os.path.join(space(), target)
            os.makedirs(dest, exist_ok=True)
            argv = ["cp", "-r", "--", local + "/.", dest + "/"]
        else:
            argv = ssh(item) + ["--mkpath", "--", local + "/", f"{item['address']}:{target}/"]
    else:
        continue
    code, why = run(argv)
    verb = "copied in from" if action == "fetch" else "written back to"
    if code:
        fail(f"{item['direction']} {item['name']} could not be {verb} {item['host']}:{target}: {why}; {advice(item)}")
    print(f"clusterhub run: {item['direction']} {item['name']} {verb} {item['host']}:{target}", flush=True)
if action == "fetch":
    with open(f"data-{task}.json", "w", encoding="utf-8") as f:
        json.dump(paths, f)
unmount()
"""
