"""Job definitions of the runs service (a notebook on a cron schedule) in process: the real handlers, the real
SQLite store and the real firing code (service.fire_due, which the service's poll calls), Slurm scripted as in
test_runs_service."""

from __future__ import annotations

import sqlite3

import pytest
import test_runs_service
from test_runs_service import call, submit_body

from clusterhub.runs.service import fire_due
from clusterhub.runs.slurm import SlurmCommands, reconcile
from clusterhub.runs.store import Store

service = test_runs_service.service
MINUTE = 60.0


def definition_body(**extra):
    return submit_body(schedule="*/10 * * * *", name="nightly", **extra)


def sbatches(service):
    return [(argv, script) for argv, script in service.slurm.calls if "sbatch" in argv]


def slurm_offer(service):
    return service.app.settings["runs"].offer


def test_a_definition_fires_as_its_owner_on_its_schedule_once_per_time(service):
    async def scenario(base):
        status, created = await call(base, "scheduler/job_definitions", method="POST", body=definition_body())
        assert status == 201, created
        definition_id, first = created["job_definition_id"], created["next_run_time"] / 1000
        assert first % (10 * MINUTE) == 0 and not sbatches(service)  # nothing runs before its time
        listed = (await call(base, "scheduler/job_definitions"))[1]
        assert [d["job_definition_id"] for d in listed["job_definitions"]] == [definition_id]
        described = (await call(base, f"scheduler/job_definitions/{definition_id}"))[1]
        assert described["schedule"] == "*/10 * * * *" and described["timezone"] == "UTC" and described["active"]
        assert described["compute_type"] == "small" and described["parameters"] == {"n": 5}

        stores = service.store, SlurmCommands(runner=service.slurm), slurm_offer(service)
        assert fire_due(*stores, now=first - 1) == 0
        assert fire_due(*stores, now=first + 1) == 1
        argv, script = sbatches(service)[-1]
        assert argv[:4] == ["sudo", "-n", "-u", "alice"] and "#SBATCH --partition=jupyter" in script
        assert fire_due(*stores, now=first + 2) == 0  # fired once for its time
        runs = (await call(base, f"scheduler/jobs?job_definition_id={definition_id}"))[1]
        assert runs["total_count"] == 1 and runs["jobs"][0]["job_definition_id"] == definition_id
        assert runs["jobs"][0]["name"] == "nightly" and runs["jobs"][0]["status"] == "QUEUED"
        described = (await call(base, f"scheduler/job_definitions/{definition_id}"))[1]
        assert described["last_run_id"] == runs["jobs"][0]["job_id"]
        assert described["next_run_time"] / 1000 == first + 10 * MINUTE

        # the previous run still queued at the next time: this firing is skipped, and said so
        service.slurm.queue = "101|PENDING|Priority\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        assert fire_due(*stores, now=first + 10 * MINUTE + 1) == 0
        described = (await call(base, f"scheduler/job_definitions/{definition_id}"))[1]
        assert "skipped" in described["status_message"] and "still queued" in described["status_message"]
        assert len(sbatches(service)) == 1

        # it ended; the service was down for hours: the missed times make one run, not many
        service.slurm.queue = ""
        service.slurm.acct = "101|COMPLETED|0:0|00:00:20|02:00:00|00:10|1|1G||cpu=1|None\n"
        reconcile(service.store, SlurmCommands(runner=service.slurm))
        later = first + 5 * 60 * MINUTE + 1
        assert fire_due(*stores, now=later) == 1
        assert fire_due(*stores, now=later + 1) == 0 and len(sbatches(service)) == 2
        assert (await call(base, f"scheduler/jobs?job_definition_id={definition_id}"))[1]["total_count"] == 2

    service.run(scenario)


def test_paused_definitions_do_not_fire_until_resumed_and_run_now_runs_at_once(service):
    async def scenario(base):
        created = (await call(base, "scheduler/job_definitions", method="POST", body=definition_body()))[1]
        definition_id = created["job_definition_id"]
        path = f"scheduler/job_definitions/{definition_id}"
        assert (await call(base, path, method="PATCH", body={"active": False}))[0] == 204
        paused = (await call(base, path))[1]
        assert paused["active"] is False and paused["next_run_time"] is None and paused["status_message"] == "paused"
        stores = service.store, SlurmCommands(runner=service.slurm), slurm_offer(service)
        assert fire_due(*stores, now=created["next_run_time"] / 1000 + 3600) == 0 and not sbatches(service)

        # run now, with other parameters, typed as the dialog sends them
        status, run = await call(
            base, path + "/jobs", method="POST", body={"parameters": {"n": "7"}, "parameters_as_text": True}
        )
        assert status == 201 and len(sbatches(service)) == 1
        assert (await call(base, f"scheduler/jobs/{run['job_id']}"))[1]["parameters"] == {"n": 7}

        # resumed with a new schedule, in a time zone
        body = {"active": True, "schedule": "0 6 * * 1", "timezone": "Europe/Helsinki"}
        assert (await call(base, path, method="PATCH", body=body))[0] == 204
        resumed = (await call(base, path))[1]
        assert resumed["active"] and resumed["schedule"] == "0 6 * * 1" and resumed["timezone"] == "Europe/Helsinki"
        assert resumed["next_run_time"] is not None

        assert (await call(base, path, method="DELETE"))[0] == 204
        assert (await call(base, path))[0] == 404
        # its runs stay, as runs
        assert (await call(base, f"scheduler/jobs/{run['job_id']}"))[0] == 200

    service.run(scenario)


def test_a_firing_that_is_refused_is_a_failed_run_saying_why(service):
    async def scenario(base):
        created = (await call(base, "scheduler/job_definitions", method="POST", body=definition_body()))[1]
        when = created["next_run_time"] / 1000 + 1
        stores = service.store, SlurmCommands(runner=service.slurm), slurm_offer(service)
        # the site removed the profile since the definition was made: checked again at each firing
        offer = slurm_offer(service)
        small = offer["profiles"].pop(0)
        try:
            assert fire_due(*stores, now=when) == 1
        finally:
            offer["profiles"].insert(0, small)
        runs = (await call(base, "scheduler/jobs"))[1]["jobs"]
        assert runs[0]["status"] == "FAILED" and "could not be submitted" in runs[0]["status_message"]
        assert "small" in runs[0]["status_message"] and not sbatches(service)
        described = (await call(base, f"scheduler/job_definitions/{created['job_definition_id']}"))[1]
        assert "was refused" in described["status_message"] and described["active"]

    service.run(scenario)


@pytest.mark.security
def test_another_users_definition_is_not_found_and_not_run(service):
    async def scenario(base):
        created = (await call(base, "scheduler/job_definitions", method="POST", body=definition_body()))[1]
        path = f"scheduler/job_definitions/{created['job_definition_id']}"
        for method, suffix, body in [
            ("GET", "", None),
            ("PATCH", "", {"active": False}),
            ("DELETE", "", None),
            ("POST", "/jobs", {}),
        ]:
            status, answer = await call(base, path + suffix, token="bob-token", method=method, body=body)
            assert status == 404 and "of yours" in answer["message"], (method, suffix, answer)
        assert (await call(base, "scheduler/job_definitions", token="bob-token"))[1]["job_definitions"] == []
        assert (await call(base, path))[1]["active"] is True  # bob's PATCH changed nothing
        assert not sbatches(service)
        assert (await call(base, "scheduler/job_definitions", token="service-token"))[0] == 403
        assert (await call(base, "scheduler/job_definitions", token="noaccess-token"))[0] == 403

    service.run(scenario)


@pytest.mark.security
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"schedule": "* * * * *\n#SBATCH --uid=0"}, "may hold only"),
        ({"schedule": "* * * * * $(id)"}, "may hold only"),
        ({"schedule": "61 * * * *"}, "the minute field takes 0 to 59"),
        ({"schedule": ""}, "it is empty"),
        ({"timezone": "../../../etc/shadow"}, "not a time zone name"),
        ({"profile": "custom", "partition": "jupyter; id"}, "unknown partition"),
        ({"profile": "custom", "partition": "jupyter", "cpus": 8}, "partition jupyter allows 1 to 2"),
        ({"input_filename": "../x.ipynb"}, "without '/'"),
        ({"profile": "hpc"}, "remote HPC mode"),
    ],
)
def test_bad_definitions_are_refused_saying_why_and_nothing_is_kept(service, extra, message):
    async def scenario(base):
        status, answer = await call(base, "scheduler/job_definitions", method="POST", body=definition_body() | extra)
        assert status == 400 and message in answer["message"], answer
        assert (await call(base, "scheduler/job_definitions"))[1]["job_definitions"] == []
        assert not sbatches(service)

    service.run(scenario)


def test_a_user_has_at_most_the_hubs_number_of_definitions(service):
    service.app.settings["runs"].max_definitions = 2

    async def scenario(base):
        for _ in range(2):
            assert (await call(base, "scheduler/job_definitions", method="POST", body=definition_body()))[0] == 201
        status, answer = await call(base, "scheduler/job_definitions", method="POST", body=definition_body())
        assert status == 409 and "the most this hub allows" in answer["message"]
        # another user's count is their own
        assert (
            await call(base, "scheduler/job_definitions", token="bob-token", method="POST", body=definition_body())
        )[0] == 201

    service.run(scenario)


def test_a_database_of_an_earlier_release_gains_the_new_column_and_keeps_its_runs(tmp_path):
    path = tmp_path / "runs.sqlite"
    with sqlite3.connect(path) as db:  # the runs table as the release before job definitions made it
        db.execute(
            "CREATE TABLE runs (run_id VARCHAR(36) PRIMARY KEY, owner VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL,"
            " input_filename VARCHAR(255) NOT NULL, request TEXT NOT NULL, parameters TEXT NOT NULL, sweep VARCHAR(64)"
            " NOT NULL, tasks INTEGER NOT NULL, status VARCHAR(16) NOT NULL, status_message TEXT NOT NULL, job_id"
            " VARCHAR(32) NOT NULL, efficiency TEXT NOT NULL, create_time FLOAT NOT NULL, update_time FLOAT NOT NULL,"
            " start_time FLOAT, end_time FLOAT, gone_since FLOAT)"
        )
        db.execute(
            "INSERT INTO runs VALUES ('00000000-0000-4000-8000-000000000001', 'alice', 'old', 'old.ipynb', '{}', '{}',"
            " '', 1, 'COMPLETED', 'completed', '42', '', 1.0, 2.0, 1.5, 2.0, NULL)"
        )
    store = Store(f"sqlite:///{path}")
    old = store.get("alice", "00000000-0000-4000-8000-000000000001")
    assert old.status == "COMPLETED" and old.job_id == "42" and old.job_definition_id == ""
    assert store.count("alice") == 1 and store.definitions("alice") == []
    again = Store(f"sqlite:///{path}")  # and again: nothing more to add, nothing lost
    assert again.get("alice", old.run_id) == old
