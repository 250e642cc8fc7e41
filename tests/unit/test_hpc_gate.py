"""hpc-gate, the forced command of the HPC account (src/clusterhub/gate.py)."""

from __future__ import annotations

import grp
import io
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clusterhub import gate

GATE = Path(gate.__file__)  # the file the hpc_account role installs

CONFIG = gate.Config(job_name="jupyterhub", squeue_format="%i|%T|%B|%r")
USER = "jupyterhpc"
SQUEUE_ARGS = ("--noheader", "--user=jupyterhpc", "--name=jupyterhub", "--format=%i|%T|%B|%r")
SQUEUE_ALL = ("--noheader", "--user=jupyterhpc", "--format=%i|%T|%B|%r")

ACCEPTED = [
    ("sbatch --parsable", "sbatch", ("--parsable", "--job-name=jupyterhub"), True),
    ("  sbatch   --parsable ", "sbatch", ("--parsable", "--job-name=jupyterhub"), True),
    ("sbatch --parsable --job-name=jupyterhub-alice", "sbatch", ("--parsable", "--job-name=jupyterhub-alice"), True),
    ("sbatch -J jupyterhub-bob.x --parsable", "sbatch", ("--parsable", "--job-name=jupyterhub-bob.x"), True),
    ("squeue", "squeue", SQUEUE_ALL, False),
    ("squeue -h -o '%i|%T|%B|%r'", "squeue", SQUEUE_ALL, False),
    (
        "squeue -h --name jupyterhub-alice",
        "squeue",
        (*SQUEUE_ARGS[:2], "--name=jupyterhub-alice", SQUEUE_ARGS[3]),
        False,
    ),
    ("squeue -h --name jupyterhub -o '%i|%T|%B|%r'", "squeue", SQUEUE_ARGS, False),
    ("squeue -h --name jupyterhub -o %i|%T|%B|%r", "squeue", SQUEUE_ARGS, False),
    ("squeue --noheader --name=jupyterhub --format='%i|%T|%B|%r'", "squeue", SQUEUE_ARGS, False),
    ("squeue -n jupyterhub", "squeue", SQUEUE_ARGS, False),
    ("scancel 4242", "scancel", ("--user=jupyterhpc", "4242"), False),
    ("scancel '17'", "scancel", ("--user=jupyterhpc", "17"), False),
    ("joblog 4242", "joblog", ("4242",), False),
]

REFUSED = [
    (None, "no command given"),
    ("", "no command given"),
    ("   ", "no command given"),
    ("bash", "'bash' is not allowed"),
    ("bash -i", "'bash' is not allowed"),
    ("id", "'id' is not allowed"),
    ("/usr/bin/sbatch --parsable", "'/usr/bin/sbatch' is not allowed"),
    ("sh -c 'sbatch --parsable'", "'sh' is not allowed"),
    ("sbatch", "only `sbatch --parsable"),
    ("sbatch --job-name=jupyterhub-alice", "only `sbatch --parsable"),
    ("sbatch --parsable --wrap 'id'", "argument '--wrap' is not allowed"),
    ("sbatch --wrap=id --parsable", "argument '--wrap=id' is not allowed"),
    ("sbatch --parsable job.sh", "argument 'job.sh' is not allowed"),
    ("sbatch --parsable --uid=0", "argument '--uid=0' is not allowed"),
    ("sbatch --parsable; id", "argument '--parsable;' is not allowed"),
    ("sbatch --parsable && id", "argument '&&' is not allowed"),
    ("sbatch --parsable | sh", "argument '|' is not allowed"),
    ("sbatch --parsable $(id)", "argument '$(id)' is not allowed"),
    ("sbatch --parsable --parsable", "given twice"),
    ("sbatch --parsable --job-name=other", "job names must be 'jupyterhub' or 'jupyterhub-<suffix>'"),
    ("sbatch --parsable --job-name=jupyterhub-", "job names must be"),
    ("sbatch --parsable --job-name='jupyterhub-a b'", "job names must be"),
    ("sbatch --parsable --job-name=jupyterhubx", "job names must be"),
    ("sbatch '--parsable", "cannot parse the command"),
    ("squeue -u root", "argument '-u' is not allowed"),
    ("squeue --user=root", "argument '--user=root' is not allowed"),
    ("squeue -a", "argument '-a' is not allowed"),
    ("squeue --name other", "job names must be 'jupyterhub'"),
    ("squeue --name=jupyterhub,other", "job names must be 'jupyterhub'"),
    ("squeue -o '%i %u %Z'", "only the format"),
    ("squeue --format=%all", "only the format"),
    ("squeue -o", "option -o needs a value"),
    ("squeue -h -h", "given twice"),
    ("squeue --noheader=yes", "argument '--noheader=yes' is not allowed"),
    ("squeue; id", "'squeue;' is not allowed"),
    ("squeue -h --name jupyterhub -o '%i|%T|%B|%r' `id`", "argument '`id`' is not allowed"),
    ("scancel", "exactly one numeric job id"),
    ("scancel 12 13", "exactly one numeric job id"),
    ("scancel -u jupyterhpc", "exactly one numeric job id"),
    ("scancel --user=other 12", "exactly one numeric job id"),
    ("scancel 12_3", "exactly one numeric job id"),
    ("scancel 0", "exactly one numeric job id"),
    ("scancel -1", "exactly one numeric job id"),
    ("scancel 12;id", "exactly one numeric job id"),
    ("joblog", "joblog: exactly one numeric job id"),
    ("joblog ../../etc/shadow", "joblog: exactly one numeric job id"),
    ("joblog 12 13", "joblog: exactly one numeric job id"),
    ("scancel 1234567890123456789012", "exactly one numeric job id"),
    ("scontrol show jobs", "'scontrol' is not allowed"),
    ("srun hostname", "'srun' is not allowed"),
    ("salloc", "'salloc' is not allowed"),
    ("rsync --server -e.LsfxC . /tmp", "'rsync' is not allowed"),
    ("scp -t /tmp", "'scp' is not allowed"),
    ("internal-sftp", "'internal-sftp' is not allowed"),
]


@pytest.mark.parametrize(("command", "tool", "args", "stdin"), ACCEPTED)
def test_accepted(command, tool, args, stdin):
    request = gate.parse(command, CONFIG, USER)
    assert (request.tool, request.args, request.stdin) == (tool, args, stdin)


@pytest.mark.parametrize(("command", "message"), REFUSED)
def test_refused(command, message):
    with pytest.raises(gate.Refused) as excinfo:
        gate.parse(command, CONFIG, USER)
    assert message in str(excinfo.value)


def test_the_configured_name_and_format_are_the_only_ones():
    config = gate.Config(job_name="hpcjob", squeue_format="%i %T")
    assert gate.parse("squeue --name hpcjob -o '%i %T'", config, USER).args[2:] == ("--name=hpcjob", "--format=%i %T")
    assert gate.parse("scancel 5", config, USER).args == ("--user=jupyterhpc", "5")
    assert gate.parse("sbatch --parsable", config, USER).args == ("--parsable", "--job-name=hpcjob")
    with pytest.raises(gate.Refused):
        gate.parse("squeue --name jupyterhub", config, USER)


@pytest.mark.parametrize(
    ("script", "accepted"),
    [
        (b"#!/bin/bash\n#SBATCH --time=1\nsleep 1\n", True),
        (b"sleep 1\n", False),
        (b"", False),
        (b"#!" + b"x" * gate.MAX_SCRIPT_BYTES, False),
    ],
)
def test_read_script(script, accepted):
    if accepted:
        assert gate.read_script(io.BytesIO(script)) == script
    else:
        with pytest.raises(gate.Refused):
            gate.read_script(io.BytesIO(script))


def test_load_config(tmp_path):
    conf = tmp_path / "hpc-gate.conf"
    conf.write_text("# managed\n[hpc-gate]\njob_name = nb\nsqueue_format = %i|%T\nslurm_bin_dir = /opt/slurm/bin\n")
    assert gate.load_config(str(conf)) == gate.Config("nb", "%i|%T", "/opt/slurm/bin")
    assert gate.load_config(str(tmp_path / "missing")) == gate.Config()


def run_gate(command: str | None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run([sys.executable, str(GATE)], input=stdin, env=env, capture_output=True, check=False)


@pytest.mark.parametrize("command", [None, "bash", "id", "sbatch --wrap id", "squeue -u root", "scancel 1 2"])
def test_the_script_refuses_with_status_2_and_a_message(command):
    proc = run_gate(command)
    assert proc.returncode == gate.EXIT_REFUSED
    assert proc.stderr.startswith(b"hpc-gate: refused: ")
    assert proc.stdout == b""


@pytest.mark.skipif(
    shutil.which("sbatch", path=gate.DEFAULT_PATH) is not None or os.path.exists(gate.CONFIG_FILE),
    reason="Slurm or an hpc-gate configuration is installed here",
)
@pytest.mark.parametrize(
    ("command", "tool"), [("sbatch --parsable", "sbatch"), ("squeue", "squeue"), ("scancel 7", "scancel")]
)
def test_the_script_says_when_slurm_is_missing(command, tool):
    proc = run_gate(command, stdin=b"#!/bin/sh\ntrue\n")
    assert proc.returncode == gate.EXIT_NOT_FOUND
    assert proc.stderr.decode() == f"hpc-gate: {tool} not found (Slurm's client commands are not installed here)\n"


def test_the_script_checks_the_job_script_before_looking_for_sbatch():
    proc = run_gate("sbatch --parsable", stdin=b"echo no shebang\n")
    assert proc.returncode == gate.EXIT_REFUSED
    assert b"must start with #!" in proc.stderr


def test_joblog_prints_the_end_of_that_jobs_output(tmp_path):
    logs = tmp_path / ".clusterhub" / "logs"
    logs.mkdir(parents=True)
    (logs / "jupyterhub-alice-41.log").write_text("clusterhub: not this job\n")
    (logs / "jupyterhub-alice-42.log").write_text(
        "clusterhub: job 42 on rnode1 for jupyterhpc, 1 CPUs\n"
        "FATAL:   could not open image /opt/clusterhub/images/python.sif: no such file or directory\n"
    )
    assert gate.job_output_end("42", gate.Config(), str(tmp_path)) == [
        "clusterhub: job 42 on rnode1 for jupyterhpc, 1 CPUs",
        "FATAL:   could not open image /opt/clusterhub/images/python.sif: no such file or directory",
    ]
    assert gate.job_output_end("43", gate.Config(), str(tmp_path)) == []


def test_joblog_never_follows_a_link_a_job_put_there(tmp_path):
    logs = tmp_path / ".clusterhub" / "logs"
    logs.mkdir(parents=True)
    secret = tmp_path / "tunnel_key"
    secret.write_text("PRIVATE KEY\n")
    (logs / "jupyterhub-alice-7.log").symlink_to(secret)
    assert gate.job_output_end("7", gate.Config(), str(tmp_path)) == []


def test_joblog_shortens_and_limits_what_it_prints(tmp_path):
    logs = tmp_path / ".clusterhub" / "logs"
    logs.mkdir(parents=True)
    (logs / "j-9.log").write_text("".join(f"line {i}\n" for i in range(100)))
    printed = gate.job_output_end("9", gate.Config(), str(tmp_path))
    assert len(printed) == gate.MAX_LOG_LINES and printed[-1] == "line 99"
    # a huge output: only its last MAX_LOG_BYTES are read, every line shortened
    (logs / "j-10.log").write_text("".join(f"{i} " + "x" * 1000 + "\n" for i in range(1000)))
    printed = gate.job_output_end("10", gate.Config(), str(tmp_path))
    assert printed[-1].startswith("999 ") and len(printed) <= gate.MAX_LOG_BYTES // 1000 + 1
    assert all(len(line) <= gate.MAX_LINE_CHARS for line in printed)


# --- hub users with HPC accounts of their own (users_group; partitions with run_as: user) -----------------

GROUP_CONFIG = gate.Config(job_name="jupyterhub", squeue_format="%i|%T|%B|%r", users_group="hpcusers")
PASSWD = {
    "alice": pwd.struct_passwd(("alice", "x", 2001, 2001, "", "/home/alice", "/bin/bash")),
    "bob": pwd.struct_passwd(("bob", "x", 2002, 3000, "", "/home/bob", "/bin/bash")),  # primary group hpcusers
    "carol": pwd.struct_passwd(("carol", "x", 2003, 2003, "", "/home/carol", "/bin/bash")),  # not a member
    "daemon": pwd.struct_passwd(("daemon", "x", 1, 1, "", "/usr/sbin", "/usr/sbin/nologin")),
    "root": pwd.struct_passwd(("root", "x", 0, 0, "", "/root", "/bin/bash")),
}
GROUPS = {"hpcusers": grp.struct_group(("hpcusers", "x", 3000, ["alice", "daemon", "root"]))}


@pytest.fixture
def accounts(monkeypatch):
    def getpwnam(name):
        return PASSWD[name]

    def getgrnam(name):
        return GROUPS[name]

    monkeypatch.setattr(gate.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(gate.grp, "getgrnam", getgrnam)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "as alice sbatch --parsable --job-name=jupyterhub-alice",
            (
                "sbatch",
                ("--parsable", "--job-name=jupyterhub-alice"),
                True,
                "sbatch --parsable --job-name=jupyterhub-alice",
            ),
        ),
        ("as bob scancel 42", ("scancel", ("--user=bob", "42"), False, "scancel 42")),
        ("as alice joblog 7", ("joblog", ("7",), False, "joblog 7")),
    ],
)
@pytest.mark.usefixtures("accounts")
def test_as_a_member_runs_the_checked_command_as_that_user(command, expected):
    request = gate.parse(command, GROUP_CONFIG, USER)
    assert (request.tool, request.args, request.stdin, request.inner) == expected
    assert request.as_user == command.split()[1]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("as carol sbatch --parsable", "carol is not a member of hpcusers"),
        ("as nobody9 scancel 1", "nobody9 is not a member of hpcusers"),
        ("as root scancel 1", "root is a system account"),
        ("as daemon scancel 1", "daemon is a system account"),
        ("as Alice scancel 1", "'Alice' is not a user name"),
        ("as 'al ice' scancel 1", "is not a user name"),
        ("as alice", "usage `as USER"),
        ("as alice as bob scancel 1", "'as' is not allowed"),
        ("as alice squeue", "squeue runs as the gate's account"),
        ("as alice bash -i", "'bash' is not allowed"),
        ("as alice sbatch --parsable --wrap id", "argument '--wrap' is not allowed"),
        ("as alice scancel --user=bob 1", "exactly one numeric job id"),
    ],
)
def test_as_refuses_what_the_group_does_not_allow(accounts, command, message):
    with pytest.raises(gate.Refused) as excinfo:
        gate.parse(command, GROUP_CONFIG, USER)
    assert message in str(excinfo.value)


def test_as_is_refused_where_no_users_group_is_set(accounts):
    with pytest.raises(gate.Refused, match="sets no users_group"):
        gate.parse("as alice scancel 1", CONFIG, USER)


def test_with_a_users_group_squeue_lists_the_hubs_jobs_of_every_account():
    request = gate.parse("squeue -h -o '%i|%T|%B|%r'", GROUP_CONFIG, USER)
    assert request.args == ("--noheader", "--format=%i|%T|%B|%r|%j") and request.name_filter
    output = (
        "11|RUNNING|rnode1|None|jupyterhub-alice\n12|PENDING|n/a|Priority|bobs-own-job\n13|RUNNING|x|None|jupyterhub\n"
    )
    assert gate.name_lines(output, GROUP_CONFIG) == "11|RUNNING|rnode1|None\n13|RUNNING|x|None\n"


def test_load_config_reads_the_users_group(tmp_path):
    conf = tmp_path / "hpc-gate.conf"
    conf.write_text("[hpc-gate]\nusers_group = hpcusers\nusers_min_uid = 5000\n")
    assert gate.load_config(str(conf)) == gate.Config(users_group="hpcusers", users_min_uid=5000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--run", "as alice scancel 1"], b"'as' is not allowed"),
        (["--run", "bash"], b"'bash' is not allowed"),
        (["--shell"], b"the only option is --run COMMAND"),
        (["--run", "scancel 1", "extra"], b"the only option is --run COMMAND"),
    ],
)
def test_the_run_entry_checks_again_and_takes_no_as(argv, message):
    proc = subprocess.run(
        [sys.executable, str(GATE), *argv], env={"PATH": "/usr/bin:/bin"}, capture_output=True, check=False
    )
    assert proc.returncode == gate.EXIT_REFUSED
    assert message in proc.stderr


def test_as_hands_the_command_to_sudo_and_the_script_on_stdin(accounts, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append((argv, kwargs.get("input")))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(gate.subprocess, "run", fake_run)
    request = gate.parse("as alice sbatch --parsable --job-name=jupyterhub-alice", GROUP_CONFIG, USER)
    assert gate.run_as(request, b"#!/bin/sh\n") == 0
    assert calls == [
        (
            [
                *("/usr/bin/sudo", "-n", "-u", "alice", "--", gate.GATE),
                *("--run", "sbatch --parsable --job-name=jupyterhub-alice"),
            ],
            b"#!/bin/sh\n",
        )
    ]


def test_sbatch_starts_the_job_in_the_home_and_creates_the_log_directory(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # a stand-in sbatch that reports how it was called (the lab runs the real one)
    (bindir / "sbatch").write_text('#!/bin/sh\necho "$PWD $*"; cat >/dev/null\n')
    (bindir / "sbatch").chmod(0o755)
    config = gate.Config(slurm_bin_dir=str(bindir))
    request = gate.parse("sbatch --parsable", config, USER)
    home = tmp_path / "home"
    home.mkdir()
    capture = tmp_path / "out"
    with capture.open("wb") as fh:
        monkeypatch.setattr(gate.sys, "stdout", fh)
        real_run = subprocess.run
        monkeypatch.setattr(gate.subprocess, "run", lambda argv, **kw: real_run(argv, stdout=fh, **kw))
        assert gate.execute(request, config, b"#!/bin/sh\n", str(home)) == 0
    assert capture.read_text().split() == [str(home), "--parsable", "--job-name=jupyterhub", f"--chdir={home}"]
    assert (home / ".clusterhub" / "logs").is_dir()
    assert (home / ".clusterhub" / "logs").stat().st_mode & 0o777 == 0o700


# --- the login account is not the job account (job_account): nothing the jobs write runs at the login ------

JOB_CONFIG = gate.Config(job_name="jupyterhub", squeue_format="%i|%T|%B|%r", job_account="jupyterhpc")


def _main_as(monkeypatch, config, login: str, command: str, *, argv=(), stdin: bytes = b""):
    """gate.main() as the account `login` (pwd faked), with sudo and Slurm calls captured, not run."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs.get("input")))
        return subprocess.CompletedProcess(cmd, 0, stdout=b"")

    entry = pwd.struct_passwd((login, "*", 999, 999, "", "/var/lib/clusterhub/hpc-gate", "/bin/sh"))
    monkeypatch.setattr(gate, "load_config", lambda: config)
    monkeypatch.setattr(gate.pwd, "getpwuid", lambda uid: entry)
    monkeypatch.setattr(gate.subprocess, "run", fake_run)
    monkeypatch.setattr(gate, "find_tool", lambda tool, config: f"/usr/bin/{tool}")
    monkeypatch.setattr(gate.syslog, "syslog", lambda *a: None)
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", command)
    monkeypatch.setattr(gate.sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return gate.main(list(argv)), calls


@pytest.mark.parametrize(
    ("command", "inner"),
    [
        ("sbatch --parsable --job-name=jupyterhub-alice", "sbatch --parsable --job-name=jupyterhub-alice"),
        ("scancel 42", "scancel 42"),
        ("joblog  42", "joblog 42"),
    ],
)
def test_the_login_account_runs_the_hubs_jobs_as_the_job_account_through_sudo(monkeypatch, command, inner):
    stdin = b"#!/bin/sh\n" if command.startswith("sbatch") else b""
    status, calls = _main_as(monkeypatch, JOB_CONFIG, "clusterhub-gate", command, stdin=stdin)
    assert status == 0
    assert calls == [(["/usr/bin/sudo", "-n", "-u", "jupyterhpc", "--", gate.GATE, "--run", inner], stdin or None)]


def test_the_login_account_lists_the_job_accounts_jobs_itself(monkeypatch):
    status, calls = _main_as(monkeypatch, JOB_CONFIG, "clusterhub-gate", "squeue -h --name jupyterhub-alice")
    assert status == 0
    assert [cmd for cmd, _ in calls] == [
        ["/usr/bin/squeue", "--noheader", "--user=jupyterhpc", "--name=jupyterhub-alice", "--format=%i|%T|%B|%r"]
    ]


def test_run_executes_as_the_job_account_with_its_own_name(monkeypatch):
    status, calls = _main_as(monkeypatch, JOB_CONFIG, "jupyterhpc", "", argv=["--run", "scancel 42"])
    assert status == 0
    assert [cmd for cmd, _ in calls] == [["/usr/bin/scancel", "--user=jupyterhpc", "42"]]


@pytest.mark.parametrize("account", ["clusterhub-gate", "mallory"])
def test_run_refuses_any_account_but_the_job_account(monkeypatch, capsys, account):
    status, calls = _main_as(monkeypatch, JOB_CONFIG, account, "", argv=["--run", "scancel 42"])
    assert status == gate.EXIT_REFUSED
    assert calls == []
    assert "--run: runs only as jupyterhpc" in capsys.readouterr().err


def test_the_gate_runs_isolated():
    # python3 -I: no user site-packages, no PYTHON* variables, no script directory on sys.path
    assert GATE.read_text().splitlines()[0] == "#!/usr/bin/python3 -I"


# --- notebook runs (runs_job_name set): sbatch under the runs' name, sacct, runfile --------------------------

RUNS_CONFIG = gate.Config(
    job_name="jupyterhub", squeue_format="%i|%T|%B|%r", users_group="hpcusers", runs_job_name="clusterhub-run"
)
RUN = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "as alice sbatch --parsable --job-name=clusterhub-run",
            ("sbatch", ("--parsable", "--job-name=clusterhub-run")),
        ),
        (
            "as alice sacct 41,42",
            (
                "sacct",
                ("--noheader", "--parsable2", "--user=alice", "--jobs=41,42", f"--format={gate.Config.sacct_fields}"),
            ),
        ),
        (
            "as bob sacct 7",
            ("sacct", ("--noheader", "--parsable2", "--user=bob", "--jobs=7", f"--format={gate.Config.sacct_fields}")),
        ),
        (f"as alice runfile {RUN} output.ipynb", ("runfile", (RUN, "output.ipynb"))),
        (f"as alice runfile {RUN} output-12.ipynb", ("runfile", (RUN, "output-12.ipynb"))),
        (f"as alice runfile {RUN} job-0.log", ("runfile", (RUN, "job-0.log"))),
    ],
)
def test_runs_commands_run_as_the_user_rebuilt_from_the_whitelist(command, expected):
    request = gate.parse(command, RUNS_CONFIG, USER)
    assert (request.tool, request.args) == expected and request.as_user == command.split()[1]
    # sudo's `hpc-gate --run` parses the same words again, as that user, and gets the same request
    again = gate.parse(request.inner, RUNS_CONFIG, request.as_user, allow_as=False)
    assert (again.tool, again.args[:3]) == (expected[0], expected[1][:3])


@pytest.mark.usefixtures("accounts")
@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("as alice sacct", "sacct: exactly one list of numeric job ids"),
        ("as alice sacct 1 2", "sacct: exactly one list of numeric job ids"),
        ("as alice sacct 1,x", "sacct: exactly one list of numeric job ids"),
        ("as alice sacct --user=bob 1", "sacct: exactly one list of numeric job ids"),
        ("as alice sacct -a", "sacct: exactly one list of numeric job ids"),
        ("as alice sacct 1;id", "sacct: exactly one list of numeric job ids"),
        ("as alice sacct " + ",".join(["1"] * 201), "sacct: exactly one list of numeric job ids"),
        (f"as alice runfile {RUN} ../../.ssh/id_ed25519", "runfile: a run id and one of"),
        (f"as alice runfile {RUN} /etc/shadow", "runfile: a run id and one of"),
        (f"as alice runfile {RUN} data-spec-0.json", "runfile: a run id and one of"),
        ("as alice runfile ../.. output.ipynb", "runfile: a run id and one of"),
        (f"as alice runfile {RUN}", "runfile: a run id and one of"),
        (f"as alice runfile {RUN} output.ipynb extra", "runfile: a run id and one of"),
        (f"as carol runfile {RUN} output.ipynb", "carol is not a member of hpcusers"),
        ("as alice sbatch --parsable --job-name=clusterhub-runx", "job names must be"),
        ("as alice sbatch --parsable --job-name=clusterhub-run-x", "job names must be"),
    ],
)
def test_runs_commands_refuse_what_is_not_whitelisted(command, message):
    with pytest.raises(gate.Refused) as excinfo:
        gate.parse(command, RUNS_CONFIG, USER)
    assert message in str(excinfo.value)


def test_without_runs_job_name_the_gate_serves_no_runs(accounts):
    with pytest.raises(gate.Refused, match="sets no runs_job_name"):
        gate.parse(f"as alice runfile {RUN} output.ipynb", GROUP_CONFIG, USER)
    with pytest.raises(gate.Refused, match="job names must be"):
        gate.parse("as alice sbatch --parsable --job-name=clusterhub-run", GROUP_CONFIG, USER)


def test_squeue_keeps_the_runs_jobs_too():
    output = (
        "11|RUNNING|rnode1|None|jupyterhub-alice\n12|PENDING|n/a|Priority|clusterhub-run\n13|RUNNING|x|None|other\n"
    )
    assert gate.name_lines(output, RUNS_CONFIG) == "11|RUNNING|rnode1|None\n12|PENDING|n/a|Priority\n"


def _run_file(tmp_path, name):
    out = io.BytesIO()
    rc = gate.run_file(RUN, name, RUNS_CONFIG, str(tmp_path), out)
    return rc, out.getvalue()


def test_runfile_copies_a_file_of_the_run(tmp_path):
    run_dir = tmp_path / ".clusterhub" / "runs" / RUN
    run_dir.mkdir(parents=True)
    (run_dir / "output.ipynb").write_bytes(b'{"cells": []}')
    assert _run_file(tmp_path, "output.ipynb") == (0, b'{"cells": []}')
    assert _run_file(tmp_path, "job-0.log")[0] == 1  # not there


def test_runfile_never_follows_a_link_a_job_put_there(tmp_path, capsys):
    run_dir = tmp_path / ".clusterhub" / "runs" / RUN
    run_dir.mkdir(parents=True)
    (tmp_path / "secret").write_text("PRIVATE KEY\n")
    (run_dir / "output.ipynb").symlink_to(tmp_path / "secret")
    assert _run_file(tmp_path, "output.ipynb") == (1, b"")
    assert "output.ipynb" in capsys.readouterr().err
