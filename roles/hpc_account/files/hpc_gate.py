#!/usr/bin/python3
"""hpc-gate: the forced command of the HPC account the hub submits its jobs as.

sshd runs it for every login with the hub's key; SSH_ORIGINAL_COMMAND holds what the hub asked for.
Exactly three commands pass, each rebuilt from a whitelist (never handed to a shell):

    sbatch --parsable [--job-name=NAME]       the job script on stdin (must start with #!)
    squeue [-h] [--name NAME] [-o FORMAT]     this account's jobs (those named NAME), in the fixed FORMAT
    scancel JOBID                             one numeric job id of this account's jobs
    joblog JOBID                              the wrapper's messages ("clusterhub: ...") from that job's
                                              output file, so the hub can tell the user why it ended

NAME is the configured job name or that name, a dash and a suffix (the hub names each user's job
`jupyterhub-<user>`); without --job-name a job gets the configured name. FORMAT and the name come
from /etc/clusterhub/hpc-gate.conf (written by clusterhub's hpc_account role). The account exists for
the hub alone, so its jobs are the hub's. Anything else is refused with a message on stderr and exit
status 2. Installed as /usr/local/libexec/clusterhub/hpc-gate.
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import syslog
from dataclasses import dataclass

CONFIG_FILE = "/etc/clusterhub/hpc-gate.conf"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_SCRIPT_BYTES = 1024 * 1024
EXIT_REFUSED = 2
EXIT_NOT_FOUND = 127
JOB_ID = re.compile(r"^[1-9][0-9]{0,18}$")
NAME_SUFFIX = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


class Refused(Exception):
    """The request is not one of the whitelisted commands."""


MESSAGE_PREFIX = "clusterhub: "
MAX_MESSAGES = 5
MAX_MESSAGE_CHARS = 500
MAX_LOG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Config:
    job_name: str = "jupyterhub"
    squeue_format: str = "%i|%T|%B|%r"
    slurm_bin_dir: str = ""
    job_log_dir: str = ".clusterhub/logs"  # the jobs' --output directory, relative to the account's home


@dataclass(frozen=True)
class Request:
    tool: str  # sbatch, squeue or scancel
    args: tuple[str, ...]  # the arguments the gate passes (never the hub's own words, except a checked job id)
    stdin: bool = False  # the job script is read from stdin


def load_config(path: str = CONFIG_FILE) -> Config:
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(path, encoding="utf-8"):
        return Config()
    section = parser["hpc-gate"] if parser.has_section("hpc-gate") else {}
    defaults = Config()
    return Config(
        job_name=section.get("job_name", defaults.job_name).strip(),
        squeue_format=section.get("squeue_format", defaults.squeue_format).strip(),
        slurm_bin_dir=section.get("slurm_bin_dir", defaults.slurm_bin_dir).strip(),
        job_log_dir=section.get("job_log_dir", defaults.job_log_dir).strip(),
    )


def _options(words: list[str], with_value: dict[str, str], flags: dict[str, str], tool: str) -> dict[str, str]:
    """Parse `--opt VALUE`, `--opt=VALUE`, `-o VALUE` and flags into {canonical name: value}; refuse the rest."""
    seen: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in flags and not eq:
            key = flags[name]
            value = ""
        elif name in with_value:
            key = with_value[name]
            if not eq:
                i += 1
                if i == len(words):
                    raise Refused(f"{tool}: option {name} needs a value")
                value = words[i]
        else:
            raise Refused(f"{tool}: argument {word!r} is not allowed")
        if key in seen:
            raise Refused(f"{tool}: option {name} given twice")
        seen[key] = value
        i += 1
    return seen


def job_name(name: str, config: Config, tool: str) -> str:
    """NAME if it is in the hub's namespace (the configured name, or it followed by -SUFFIX); Refused otherwise."""
    prefix = config.job_name + "-"
    if name == config.job_name or (name.startswith(prefix) and NAME_SUFFIX.match(name[len(prefix) :])):
        return name
    raise Refused(f"{tool}: job names must be {config.job_name!r} or {config.job_name + '-<suffix>'!r}")


def parse(command: str | None, config: Config, user: str) -> Request:
    """Turn SSH_ORIGINAL_COMMAND into the one Request it may become, or raise Refused."""
    if command is None or not command.strip():
        raise Refused("no command given: this account runs only sbatch, squeue and scancel (no shell)")
    try:
        words = shlex.split(command, comments=False, posix=True)
    except ValueError as e:
        raise Refused(f"cannot parse the command ({e})") from None
    tool, rest = words[0], words[1:]
    if tool == "sbatch":
        opts = _options(
            rest, with_value={"--job-name": "name", "-J": "name"}, flags={"--parsable": "parsable"}, tool=tool
        )
        if "parsable" not in opts:
            raise Refused("sbatch: only `sbatch --parsable [--job-name=NAME]` with the job script on stdin is allowed")
        name = job_name(opts.get("name", config.job_name), config, tool)
        return Request("sbatch", ("--parsable", f"--job-name={name}"), stdin=True)
    if tool == "squeue":
        opts = _options(
            rest,
            with_value={"--name": "name", "-n": "name", "--format": "format", "-o": "format"},
            flags={"-h": "noheader", "--noheader": "noheader"},
            tool="squeue",
        )
        if opts.get("format", config.squeue_format) != config.squeue_format:
            raise Refused(f"squeue: only the format {config.squeue_format!r} is allowed")
        names = (f"--name={job_name(opts['name'], config, tool)}",) if "name" in opts else ()
        args = ("--noheader", f"--user={user}", *names, f"--format={config.squeue_format}")
        return Request("squeue", args)
    if tool == "scancel":
        if len(rest) != 1 or not JOB_ID.match(rest[0]):
            raise Refused("scancel: exactly one numeric job id is allowed")
        return Request("scancel", (f"--user={user}", rest[0]))
    if tool == "joblog":
        if len(rest) != 1 or not JOB_ID.match(rest[0]):
            raise Refused("joblog: exactly one numeric job id is allowed")
        return Request("joblog", (rest[0],))
    raise Refused(f"{tool!r} is not allowed: this account runs only sbatch, squeue, scancel and joblog")


def job_messages(job_id: str, config: Config, home: str) -> list[str]:
    """The wrapper's own lines ("clusterhub: ...") from the output file of job_id: a regular file of this
    account, never through a symbolic link (the jobs write in that directory), the last few, shortened."""
    directory = os.path.join(home, config.job_log_dir)
    suffix = f"-{job_id}.log"
    try:
        names = [n for n in os.listdir(directory) if n.endswith(suffix)]
    except OSError:
        return []
    messages: list[str] = []
    for name in sorted(names)[:1]:
        try:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                return []
            fh.seek(max(0, st.st_size - MAX_LOG_BYTES))
            text = fh.read(MAX_LOG_BYTES).decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith(MESSAGE_PREFIX):
                messages.append(line[len(MESSAGE_PREFIX) :][:MAX_MESSAGE_CHARS])
    return messages[-MAX_MESSAGES:]


def find_tool(tool: str, config: Config) -> str | None:
    if config.slurm_bin_dir:
        path = os.path.join(config.slurm_bin_dir, tool)
        return path if os.access(path, os.X_OK) else None
    return shutil.which(tool, path=DEFAULT_PATH)


def read_script(stream) -> bytes:
    script = stream.read(MAX_SCRIPT_BYTES + 1)
    if len(script) > MAX_SCRIPT_BYTES:
        raise Refused(f"sbatch: the job script is larger than {MAX_SCRIPT_BYTES} bytes")
    if not script.startswith(b"#!"):
        raise Refused("sbatch: the job script on stdin must start with #!")
    return script


def main() -> int:
    command = os.environ.get("SSH_ORIGINAL_COMMAND")
    user = pwd.getpwuid(os.getuid()).pw_name
    syslog.openlog("hpc-gate", syslog.LOG_PID, syslog.LOG_AUTH)
    try:
        config = load_config()
        request = parse(command, config, user)
        script = read_script(sys.stdin.buffer) if request.stdin else None
    except Refused as e:
        syslog.syslog(syslog.LOG_WARNING, f"refused {command!r}: {e}")
        print(f"hpc-gate: refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if request.tool == "joblog":
        for message in job_messages(request.args[0], config, pwd.getpwuid(os.getuid()).pw_dir):
            print(message)
        return 0
    path = find_tool(request.tool, config)
    if path is None:
        print(f"hpc-gate: {request.tool} not found (Slurm's client commands are not installed here)", file=sys.stderr)
        return EXIT_NOT_FOUND
    syslog.syslog(syslog.LOG_INFO, f"running {shlex.join([path, *request.args])}")
    # stdout and stderr are the hub's; stdin is the checked script (sbatch) or nothing
    return subprocess.run(
        [path, *request.args], input=script, stdin=None if request.stdin else subprocess.DEVNULL, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
