#!/usr/bin/python3 -I
"""hpc-gate: the forced command of the account the hub logs in as on the HPC login nodes.

sshd runs it for every login with the hub's key; SSH_ORIGINAL_COMMAND holds what the hub asked for.
The login account (`clusterhub-gate`) is not the account the jobs run as (`job_account`): it owns
nothing a job can write (a root-owned home, no dotfiles), its shell reads no startup file and the gate
runs isolated (`python3 -I`: no user site-packages, no PYTHON* variables). Every command but squeue
runs as the job account (or, with `as USER`, as USER) through `sudo -u ACCOUNT hpc-gate --run '...'`,
which checks it again there.
Only these commands pass, each rebuilt from a whitelist (never handed to a shell):

    sbatch --parsable [--job-name=NAME]       the job script on stdin (must start with #!)
    squeue [-h] [--name NAME] [-o FORMAT]     this account's jobs (those named NAME), in the fixed FORMAT
    scancel JOBID                             one numeric job id of this account's jobs
    joblog JOBID                              the end of that job's output file (its last lines, shortened),
                                              so the hub can tell the user why it ended
    sacct JOBID[,JOBID...]                    accounting of those jobs of this account, in the fixed fields
    runfile RUNID FILE                        a file of a notebook run of this account (~/RUNS_DIR/RUNID/FILE,
                                              FILE one of input.ipynb, output[-N].ipynb, job-N.log)

NAME is the configured job name or that name, a dash and a suffix (the hub names each user's job
`jupyterhub-<user>`), or the runs service's job name (runs_job_name, when set); without --job-name a job gets
the configured name. FORMAT and the name come
from /etc/clusterhub/hpc-gate.conf (written by clusterhub's hpc_account role). The account exists for
the hub alone, so its jobs are the hub's. Anything else is refused with a message on stderr and exit
status 2. Installed as /usr/local/libexec/clusterhub/hpc-gate.

Sites whose hub users have HPC accounts of their own (partitions with `run_as: user` on the hub) set
`users_group`: then `as USER sbatch|scancel|joblog|sacct|runfile ...` runs that command as USER (a member of the group,
uid >= users_min_uid), through `sudo -u USER hpc-gate --run '...'`, which checks the command again as
USER; the job runs as USER, writes its output in USER's home and only USER's jobs can be cancelled.
squeue then lists the hub's jobs of every account (by job name), so one query serves all servers.
"""

from __future__ import annotations

import configparser
import grp
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
JOB_IDS = re.compile(r"^[1-9][0-9]{0,18}(,[1-9][0-9]{0,18}){0,199}$")
# a notebook run's id and the files of its directory the runs service reads (clusterhub.protocol's RUN_ID, RUN_FILE)
RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RUN_FILE = re.compile(r"^(input\.ipynb|output(-\d{1,4})?\.ipynb|job-\d{1,4}\.log)$")
MAX_RUN_FILE_BYTES = 256 * 1024 * 1024
NAME_SUFFIX = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


class Refused(Exception):
    """The request is not one of the whitelisted commands."""


MAX_LOG_LINES = 40
MAX_LINE_CHARS = 500
MAX_LOG_BYTES = 16 * 1024


@dataclass(frozen=True)
class Config:
    job_name: str = "jupyterhub"
    squeue_format: str = "%i|%T|%B|%r|%u|%P|%j|%Q|%S"
    slurm_bin_dir: str = ""
    job_log_dir: str = ".clusterhub/logs"  # the jobs' --output directory, relative to the account's home
    users_group: str = ""  # `as USER` is allowed for this group's members (empty: never)
    users_min_uid: int = 1000  # and only for uids from this one up (never root or system accounts)
    job_account: str = ""  # the account the hub's own jobs run as (sudo); empty: the calling account
    runs_job_name: str = ""  # the notebook runs' job name (clusterhub.protocol.RUNS_JOB_NAME); empty: no runs
    runs_dir: str = ".clusterhub/runs"  # the runs' directories, relative to the home of the account they run as
    sacct_fields: str = "JobID,State,ExitCode,Elapsed,Timelimit,TotalCPU,AllocCPUS,ReqMem,MaxRSS,AllocTRES,Reason"


@dataclass(frozen=True)
class Request:
    tool: str  # sbatch, squeue or scancel
    args: tuple[str, ...]  # the arguments the gate passes (never the hub's own words, except a checked job id)
    stdin: bool = False  # the job script is read from stdin
    as_user: str = ""  # run as this user (sudo to `hpc-gate --run`), not as the gate's account
    inner: str = ""  # the command, as the gate runs it as that user or the job account (checked again there)
    name_filter: bool = False  # squeue: keep only lines of jobs in the hub's namespace (all accounts)


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
        users_group=section.get("users_group", defaults.users_group).strip(),
        users_min_uid=int(section.get("users_min_uid", str(defaults.users_min_uid)).strip() or defaults.users_min_uid),
        job_account=section.get("job_account", defaults.job_account).strip(),
        runs_job_name=section.get("runs_job_name", defaults.runs_job_name).strip(),
        runs_dir=section.get("runs_dir", defaults.runs_dir).strip(),
        sacct_fields=section.get("sacct_fields", defaults.sacct_fields).strip(),
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
    """NAME if it is in the hub's namespace (the configured name, or it followed by -SUFFIX, or the runs' job name);
    Refused otherwise."""
    prefix = config.job_name + "-"
    if name == config.job_name or (name.startswith(prefix) and NAME_SUFFIX.match(name[len(prefix) :])):
        return name
    if config.runs_job_name and name == config.runs_job_name:
        return name
    runs = f" or {config.runs_job_name!r}" if config.runs_job_name else ""
    raise Refused(f"{tool}: job names must be {config.job_name!r} or {config.job_name + '-<suffix>'!r}{runs}")


USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def check_user(name: str, config: Config) -> str:
    """NAME if the gate may run commands as it: `users_group` is set, NAME is a member (by its primary
    group or the group's member list) and its uid is at least users_min_uid. Refused otherwise."""
    if not config.users_group:
        raise Refused("as: this gate runs commands as its own account only (hpc-gate.conf sets no users_group)")
    if not USER_NAME.match(name):
        raise Refused(f"as: {name!r} is not a user name")
    try:
        entry = pwd.getpwnam(name)
        group = grp.getgrnam(config.users_group)
    except KeyError:
        raise Refused(f"as: {name} is not a member of {config.users_group}") from None
    if entry.pw_uid < config.users_min_uid:
        raise Refused(f"as: {name} is a system account (uid below {config.users_min_uid})")
    if entry.pw_gid != group.gr_gid and name not in group.gr_mem:
        raise Refused(f"as: {name} is not a member of {config.users_group}")
    return name


def parse(command: str | None, config: Config, user: str, allow_as: bool = True) -> Request:
    """Turn SSH_ORIGINAL_COMMAND into the one Request it may become, or raise Refused."""
    if command is None or not command.strip():
        raise Refused("no command given: this account runs only sbatch, squeue and scancel (no shell)")
    try:
        words = shlex.split(command, comments=False, posix=True)
    except ValueError as e:
        raise Refused(f"cannot parse the command ({e})") from None
    request = _parse_words(words, config, user, allow_as)
    if request.as_user:
        return request
    return Request(request.tool, request.args, request.stdin, inner=shlex.join(words), name_filter=request.name_filter)


def _parse_words(words: list[str], config: Config, user: str, allow_as: bool) -> Request:
    tool, rest = words[0], words[1:]
    if tool == "as" and allow_as:
        if len(rest) < 2:
            raise Refused("as: usage `as USER sbatch|scancel|joblog|sacct|runfile ...`")
        target = check_user(rest[0], config)
        inner = shlex.join(rest[1:])
        request = parse(inner, config, target, allow_as=False)
        if request.tool == "squeue":
            raise Refused("as: squeue runs as the gate's account (it lists the hub's jobs of every account)")
        return Request(request.tool, request.args, request.stdin, as_user=target, inner=inner)
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
        if config.users_group:
            # jobs run as the users' own accounts too: every account's, kept by job name (name_lines)
            return Request("squeue", ("--noheader", *names, f"--format={config.squeue_format}|%j"), name_filter=True)
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
    if tool == "sacct":
        if len(rest) != 1 or not JOB_IDS.match(rest[0]):
            raise Refused("sacct: exactly one list of numeric job ids (1,2,3) is allowed")
        args = ("--noheader", "--parsable2", f"--user={user}", f"--jobs={rest[0]}", f"--format={config.sacct_fields}")
        return Request("sacct", args)
    if tool == "runfile":
        if not config.runs_job_name:
            raise Refused("runfile: this gate serves no notebook runs (hpc-gate.conf sets no runs_job_name)")
        if len(rest) != 2 or not RUN_ID.match(rest[0]) or not RUN_FILE.match(rest[1]):
            raise Refused("runfile: a run id and one of input.ipynb, output[-N].ipynb, job-N.log are allowed")
        return Request("runfile", (rest[0], rest[1]))
    raise Refused(f"{tool!r} is not allowed: this account runs only sbatch, squeue, scancel, joblog, sacct and runfile")


def name_lines(output: str, config: Config) -> str:
    """squeue lines ending in `|NAME` whose NAME is in the hub's namespace, without that last field."""
    kept = []
    for line in output.splitlines():
        head, _, name = line.rpartition("|")
        try:
            job_name(name, config, "squeue")
        except Refused:
            continue
        kept.append(head + "\n")
    return "".join(kept)


def job_output_end(job_id: str, config: Config, home: str) -> list[str]:
    """The last lines of job_id's output file, shortened: a regular file of this account, never through a
    symbolic link (the jobs write in that directory). The hub reads why the job ended from them."""
    directory = os.path.join(home, config.job_log_dir)
    suffix = f"-{job_id}.log"
    try:
        names = [n for n in os.listdir(directory) if n.endswith(suffix)]
    except OSError:
        return []
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
        return [line[:MAX_LINE_CHARS] for line in text.splitlines()[-MAX_LOG_LINES:]]
    return []


def run_file(run_id: str, name: str, config: Config, home: str, out) -> int:
    """Copy a run's file to `out`: a regular file of this account below its runs directory, opened without
    following a symbolic link at the last step (the account's rights are the reader's in any case: this runs as
    the run's owner). 1 with a message when it is not there."""
    path = os.path.join(home, config.runs_dir, run_id, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        print(f"hpc-gate: runfile: {run_id}/{name}: {e.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            print(f"hpc-gate: runfile: {run_id}/{name} is not a file of this account", file=sys.stderr)
            return 1
        if st.st_size > MAX_RUN_FILE_BYTES:
            print(f"hpc-gate: runfile: {run_id}/{name} is larger than {MAX_RUN_FILE_BYTES} bytes", file=sys.stderr)
            return 1
        shutil.copyfileobj(fh, out)
    out.flush()
    return 0


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


GATE = "/usr/local/libexec/clusterhub/hpc-gate"
SUDO = "/usr/bin/sudo"


def _run(argv: list[str], request: Request, script: bytes | None, **kwargs) -> int:
    """argv with the checked script on stdin (sbatch) or nothing; stdout and stderr are the hub's."""
    stdin = None if request.stdin else subprocess.DEVNULL
    return subprocess.run(argv, input=script, stdin=stdin, check=False, **kwargs).returncode


def run_as(request: Request, script: bytes | None, account: str = "") -> int:
    """Hand the checked command to `hpc-gate --run` as request.as_user, or as `account` (the job account),
    through sudo, which allows the gate's login account exactly that."""
    account = request.as_user or account
    syslog.syslog(syslog.LOG_INFO, f"running {request.inner!r} as {account}")
    return _run([SUDO, "-n", "-u", account, "--", GATE, "--run", request.inner], request, script)


def check_runner(name: str, config: Config) -> None:
    """`--run` executes only as the job account or a users_group member (sudo's targets), never as the
    gate's login account itself or another account."""
    if config.job_account and name == config.job_account:
        return
    if config.users_group:
        check_user(name, config)
        return
    if config.job_account:
        raise Refused(f"--run: runs only as {config.job_account}")


def execute(request: Request, config: Config, script: bytes | None, home: str) -> int:
    """Run a checked request as the calling account."""
    if request.tool == "joblog":
        for line in job_output_end(request.args[0], config, home):
            print(line)
        return 0
    if request.tool == "runfile":
        return run_file(*request.args, config=config, home=home, out=sys.stdout.buffer)
    path = find_tool(request.tool, config)
    if path is None:
        print(f"hpc-gate: {request.tool} not found (Slurm's client commands are not installed here)", file=sys.stderr)
        return EXIT_NOT_FOUND
    args = list(request.args)
    if request.tool == "sbatch":
        # the job starts in this account's home and writes its output below it (#SBATCH --output is relative)
        os.makedirs(os.path.join(home, config.job_log_dir), mode=0o700, exist_ok=True)
        args.append(f"--chdir={home}")
    syslog.syslog(syslog.LOG_INFO, f"running {shlex.join([path, *args])}")
    if request.name_filter:
        result = subprocess.run([path, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, check=False)
        sys.stdout.write(name_lines(result.stdout.decode("utf-8", errors="replace"), config))
        return result.returncode
    return _run([path, *args], request, script, cwd=home)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `hpc-gate --run COMMAND`: sudo's call as a hub user's own account (run_as); the command is checked again
    inner = argv[1] if len(argv) == 2 and argv[0] == "--run" else None
    command = inner if inner is not None else os.environ.get("SSH_ORIGINAL_COMMAND")
    entry = pwd.getpwuid(os.getuid())
    syslog.openlog("hpc-gate", syslog.LOG_PID, syslog.LOG_AUTH)
    try:
        if argv and inner is None:
            raise Refused("the only option is --run COMMAND")
        config = load_config()
        if inner is not None:
            check_runner(entry.pw_name, config)
        # at the login: the hub's own jobs are the job account's (squeue and scancel name it)
        account = config.job_account if inner is None and config.job_account else entry.pw_name
        request = parse(command, config, account, allow_as=inner is None)
        script = read_script(sys.stdin.buffer) if request.stdin else None
    except Refused as e:
        syslog.syslog(syslog.LOG_WARNING, f"refused {command!r}: {e}")
        print(f"hpc-gate: refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    if request.as_user:
        return run_as(request, script)
    if account != entry.pw_name and request.tool != "squeue":
        # squeue only reads (--user=ACCOUNT, or the hub's names): the gate's own account may run it
        return run_as(request, script, account)
    return execute(request, config, script, entry.pw_dir)


if __name__ == "__main__":
    sys.exit(main())
