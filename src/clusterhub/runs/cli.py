#!/usr/bin/python3
"""clusterhub-run: notebook runs from the shell, through the runs service with a hub API token.

  clusterhub-run notebook.ipynb -p alpha=0.5 [-p ks=[1,2]] [--sweep ks] [--image python] [--profile small |
                 --partition P --cpus N --memory-gb N --hours H --gpus N] [--input NAME=HOST:PATH]
                 [--output NAME=HOST:PATH] [--wait]
  clusterhub-run list | status RUN | cancel RUN | fetch RUN [-o DIR]

The service's URL comes from --url, $CLUSTERHUB_RUNS_URL or the site's /etc/clusterhub/run.json (on login nodes,
with the hub's CA), the token from --token-file, $JUPYTERHUB_API_TOKEN or ~/.config/clusterhub/token (a token made
on the hub's token page; keep the file 0600). With --wait, the exit status is the
run's: 0 completed, 1 failed, 2 stopped. --input and --output name external data: a data host of the site and a
path there (reached over SSH with your own key), or webdav:PATH in your WebDAV space; the notebook's variable NAME
holds the local path of the copy (an output is written back after the run).

Standard library only: the role notebook_scheduler copies this file to the login nodes as /usr/local/bin/clusterhub-run.
Parameters travel as typed text (parameters_as_text), typed by the service with the rule of clusterhub.runs.params.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

EXIT = {"COMPLETED": 0, "FAILED": 1, "STOPPED": 2}
COMMANDS = ("list", "status", "cancel", "fetch")
# the options that take a value (the first other word is the command or the notebook)
VALUED = {
    "--url",
    "--token-file",
    "--cacert",
    "-p",
    "--parameter",
    "--sweep",
    "--image",
    "--profile",
    "--partition",
    "--cpus",
    "--memory-gb",
    "--hours",
    "--gpus",
    "-o",
    "--output-dir",
    "--input",
    "--output",
}
POLL_INTERVAL = 3.0
SITE_CONFIG = "/etc/clusterhub/run.json"  # {"url": ..., "cacert": ...}, written by the notebook_scheduler role
TOKEN_FILE = "~/.config/clusterhub/token"


class Client:
    def __init__(self, url: str, token: str, cafile: str | None = None):
        self.url = url.rstrip("/") + "/scheduler"
        self.token = token
        self.context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, body: dict | None = None):
        status, data = self.call(method, path, body)
        try:
            answer = json.loads(data) if data else None
        except ValueError:
            answer = {"message": data.decode(errors="replace")[:200]}
        if status >= 400:
            raise SystemExit(f"clusterhub-run: {answer.get('message') if answer else status} (HTTP {status})")
        return answer


def site_config() -> dict:
    try:
        with open(os.environ.get("CLUSTERHUB_RUN_CONFIG", SITE_CONFIG), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _parser() -> argparse.ArgumentParser:
    site = site_config()
    parser = argparse.ArgumentParser(prog="clusterhub-run", description="Run notebooks as Slurm batch jobs.")
    parser.add_argument("--url", default=os.environ.get("CLUSTERHUB_RUNS_URL", site.get("url", "")))
    parser.add_argument(
        "--token-file", help=f"file holding a hub API token (default: $JUPYTERHUB_API_TOKEN, then {TOKEN_FILE})"
    )
    parser.add_argument(
        "--cacert", default=os.environ.get("CLUSTERHUB_CA", site.get("cacert") or None), help="CA bundle for the hub"
    )
    return parser


def token(args) -> str:
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    if os.environ.get("JUPYTERHUB_API_TOKEN"):
        return os.environ["JUPYTERHUB_API_TOKEN"]
    mine = Path(TOKEN_FILE).expanduser()
    return mine.read_text().strip() if mine.is_file() else ""


def assignments(pairs: list[str]) -> dict:
    """`name=value` words as text (the service types them: 5 -> 5, [1, 2] -> a list)."""
    params: dict = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"parameter {pair[:40]!r} must be NAME=VALUE")
        if name.strip() in params:
            raise ValueError(f"parameter {name.strip()!r} is given twice")
        params[name.strip()] = value
    return params


def submit_body(args) -> dict:
    notebook = Path(args.notebook)
    body = {
        "notebook": notebook.read_text(encoding="utf-8"),
        "input_filename": notebook.name,
        "parameters": assignments(args.parameter),
        "parameters_as_text": True,
        "runtime_environment_name": args.image or "",
        "profile": args.profile or ("custom" if args.partition else ""),
    }
    if args.sweep:
        body["sweep"] = args.sweep
    if args.input or args.output:
        body.update(inputs=args.input, outputs=args.output)
    for key in ("partition", "cpus", "memory_gb", "hours", "gpus"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if not body["profile"]:
        del body["profile"]
    return body


def wait(client: Client, run_id: str) -> dict:
    while True:
        run = client.json("GET", f"/jobs/{run_id}")
        if run["status"] in EXIT:
            return run
        time.sleep(POLL_INTERVAL)


def first_word(argv: list[str]) -> str:
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in VALUED:
            skip = True
        elif not word.startswith("-"):
            return word
    return ""


def describe(run: dict) -> str:
    line = f"{run['job_id']}  {run['status']:<11}  {run['name']}  ({run['status_message']})"
    cell = run.get("failed_cell")
    if cell:
        line += f"\n  failing cell {cell['index']}: {cell['ename']}: {cell['evalue']}\n" + "\n".join(
            "  | " + text for text in cell["source"].splitlines()
        )
    elif run.get("log_tail"):  # no cell failed: the job log's last words say why
        line += "\n" + "\n".join("  > " + text for text in run["log_tail"].splitlines()[-3:])
    return line


def submit_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a submission (the notebook and what to run it with)."""
    parser.add_argument("notebook")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--sweep", help="a list parameter: one task of a job array per value")
    parser.add_argument("--image", help="runtime environment (an image name; see the service's page)")
    parser.add_argument("--profile")
    parser.add_argument("--partition")
    parser.add_argument("--cpus", type=int)
    parser.add_argument("--memory-gb", dest="memory_gb", type=int)
    parser.add_argument("--hours", type=float)
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--input", action="append", default=[], metavar="NAME=HOST:PATH")
    parser.add_argument("--output", action="append", default=[], metavar="NAME=HOST:PATH")
    parser.add_argument("--wait", action="store_true", help="wait for the end; exit 0 completed, 1 failed")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    command = first_word(argv)
    if command in COMMANDS:
        parser.add_argument("command", choices=COMMANDS)
        parser.add_argument("run", nargs="?")
        parser.add_argument("-o", "--output-dir", default=".")
    else:
        submit_arguments(parser)
    args = parser.parse_args(argv)
    secret = token(args)
    if not args.url or not secret:
        parser.error(
            f"give the service's URL (--url or CLUSTERHUB_RUNS_URL) and a hub API token (from the hub's token page, "
            f"in {TOKEN_FILE} or JUPYTERHUB_API_TOKEN)"
        )
    client = Client(args.url, secret, args.cacert)
    if command == "list":
        for run in client.json("GET", "/jobs")["jobs"]:
            print(describe(run))
        return 0
    if command in ("status", "cancel", "fetch") and not args.run:
        parser.error(f"{command} needs a run id")
    if command == "status":
        print(describe(client.json("GET", f"/jobs/{args.run}")))
        return 0
    if command == "cancel":
        client.json("PATCH", f"/jobs/{args.run}", {"status": "STOPPED"})
        print(f"{args.run} stopping")
        return 0
    if command == "fetch":
        run = client.json("GET", f"/jobs/{args.run}")
        out = Path(args.output_dir) / args.run
        out.mkdir(parents=True, exist_ok=True)
        for file in run["job_files"]:
            status, data = client.call("GET", f"/jobs/{args.run}/files/{file['display_name']}")
            if status == 200:
                (out / file["display_name"]).write_bytes(data)
                print(out / file["display_name"])
        return 0
    try:
        body = submit_body(args)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    created = client.json("POST", "/jobs", body)
    print(f"{created['job_id']} submitted (Slurm job {created['slurm_job_id']})")
    if not args.wait:
        return 0
    run = wait(client, created["job_id"])
    print(describe(run))
    return EXIT[run["status"]]


if __name__ == "__main__":
    sys.exit(main())
