"""ClusterSlurmSpawner in process, in seconds: JupyterHub's own database and user objects, batchspawner's
machinery, real subprocesses for sbatch/squeue/scancel (fake_slurm.py) and a real TCP server standing in
for the single-user server on its node. The lab proves the same paths once against real Slurm; these cover
each decision (queue timeout, a job gone early, "unknown" keeps a server, a node lost after N polls, state
reload after a hub restart) without it."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

import pytest
from fake_slurm import FakeSlurm
from spawner_harness import SMALL, NodeServer, form_of, new_spawner, polls_until_lost, record, run, until

from clusterhub.protocol import SACCT_FIELDS

pytestmark = pytest.mark.usefixtures("alice_is_the_test_runner")


async def start_and_run(spawner, slurm: FakeSlurm, node: NodeServer, pending_for: float = 0.0):
    """Start a server: the job pends, then runs on 127.0.0.1, and its server reports its port (as
    batchspawner's API handler sets it) and answers."""
    spawner.user_options = SMALL
    spawner.apply_user_options(spawner, SMALL)
    task = asyncio.ensure_future(spawner.start())
    await until(lambda: spawner.job_id, task=task)
    await asyncio.sleep(pending_for)
    slurm.run(spawner.job_id)
    port = await node.open()
    await until(lambda: spawner.ip == "127.0.0.1", task=task)
    spawner.port = port
    ip, port = await task
    spawner.server.ip, spawner.server.port = ip, port  # what JupyterHub stores of the started server
    return ip, port


def test_a_server_starts_pending_then_running_and_its_job_carries_the_form(db, slurm, tmp_path):
    spawner = new_spawner(db, slurm, tmp_path)
    node = NodeServer()

    async def scenario():
        ip, port = await start_and_run(spawner, slurm, node, pending_for=0.2)
        assert (ip, port) == ("127.0.0.1", node.port)
        assert await spawner.poll() is None
        await node.close()

    run(scenario())
    script = slurm.script(spawner.job_id)
    assert "--partition=batch" in script and "--cpus-per-task=1" in script, script
    assert spawner.get_state()["job_id"] == spawner.job_id
    assert spawner.get_state()["node_address"] == "127.0.0.1"


def test_a_starting_servers_port_is_tried_often_while_slurm_is_asked_at_its_own_pace(db, slurm, tmp_path):
    """The user waits for the first try after the server listens: every server_check_interval (0.1 s); Slurm is
    asked through the snapshot no more often than every startup_poll_interval (here 1 s)."""
    spawner = new_spawner(db, slurm, tmp_path, startup_poll_interval=1.0, squeue_max_age=25.0)
    node = NodeServer()

    async def scenario():
        spawner.apply_user_options(spawner, SMALL)
        task = asyncio.ensure_future(spawner.start())
        await until(lambda: spawner.job_id, task=task)
        slurm.run(spawner.job_id)
        await until(lambda: spawner.ip == "127.0.0.1", task=task)
        spawner.port = node.port = await node.open()  # the job reported its port; nothing listens yet
        await node.close()
        await asyncio.sleep(1.5)  # polls meanwhile: refused connects, Slurm asked about once a second
        squeues = sum(call[0] == "squeue" for call in slurm.calls)
        await node.open()
        listening = time.monotonic()
        await task
        return time.monotonic() - listening, squeues

    took, squeues = run(scenario())
    assert took < 0.5, took
    assert 1 <= squeues <= 4, slurm.calls


def test_a_waiting_start_asks_slurm_less_often_the_longer_it_waits_and_its_port_report_ends_the_wait(
    db, slurm, tmp_path
):
    """A start that waited t seconds accepts a snapshot start_poll_growth * t old (a hundred starts then cost a
    few squeues a minute, not two a second); the server's port report wakes it at once all the same, with a
    snapshot taken after the report (which shows the job running, and where)."""
    spawner = new_spawner(db, slurm, tmp_path, startup_poll_interval=0.1, start_poll_growth=0.25, squeue_max_age=25.0)
    node = NodeServer()

    async def scenario():
        spawner.apply_user_options(spawner, SMALL)
        task = asyncio.ensure_future(spawner.start())
        await until(lambda: spawner.job_id, task=task)
        await asyncio.sleep(3)  # pending: at a fixed 0.1 s, about 30 squeues
        pending_squeues = sum(call[0] == "squeue" for call in slurm.calls)
        slurm.run(spawner.job_id)
        spawner.port = node.port = await node.open()  # as the port report handler sets it
        reported = time.monotonic()
        await task
        return pending_squeues, time.monotonic() - reported

    pending_squeues, took = run(scenario())
    assert 5 <= pending_squeues <= 14, slurm.calls
    assert took < 0.4, took  # the snapshot then was about 0.75 s old: the report, not the next poll, ended the wait
    assert spawner.ip == "127.0.0.1"


def test_progress_sends_a_pending_servers_place_when_it_changes_not_every_second(db, slurm, tmp_path):
    """A user watching the spawn page gets the queue event once while Slurm says the same, a new one when the reason
    changes, then the running message (the hub streams each event to each watcher)."""
    spawner = new_spawner(db, slurm, tmp_path)
    node = NodeServer()

    async def scenario():
        spawner.apply_user_options(spawner, SMALL)
        task = asyncio.ensure_future(spawner.start())
        await until(lambda: spawner.job_id, task=task)
        events = []

        async def watch():
            async for event in spawner.progress():
                events.append(event)

        watcher = asyncio.ensure_future(watch())
        await asyncio.sleep(2.5)  # pending, Priority: looked at three times
        slurm.update(spawner.job_id, reason="Resources")
        await asyncio.sleep(1.5)
        slurm.run(spawner.job_id)
        spawner.port = await node.open()
        await task
        await asyncio.wait_for(watcher, 3)
        await node.close()
        return [event["message"] for event in events]

    messages = run(scenario())
    queued = [m for m in messages if "in the queue" in m]
    assert len(queued) == 2, messages
    assert queued[0].endswith("jobs of higher priority on partition batch go first"), messages
    assert queued[1].endswith("waiting for 1 CPU and 1 GB of memory to free up on partition batch"), messages
    assert messages[-1].startswith(f"Job {spawner.job_id} running on 127.0.0.1"), messages


def test_a_job_over_the_queue_timeout_is_cancelled_with_a_sentence(db, slurm, tmp_path):
    spawner = new_spawner(db, slurm, tmp_path, queue_timeout=1)
    spawner.apply_user_options(spawner, SMALL)
    with pytest.raises(Exception) as raised:
        run(spawner.start())
    assert raised.value.status_code == 503
    assert "waited over 1 s in the queue and was cancelled" in raised.value.jupyterhub_message
    assert slurm.cancelled == ["100"]
    assert spawner.job_id == ""


@pytest.mark.parametrize(
    "case",
    [
        (
            "slurmstepd: error: Detected 1 oom_kill event in StepId=100.batch. Some of the step tasks have been OOM "
            "Killed.\n",
            "OUT_OF_MEMORY",
            ": it ran out of memory (Detected 1 oom_kill event",
        ),
        # the node died after the banner: the output explains nothing, accounting does
        (
            "clusterhub: job 100 on node1 for alice, 1 CPUs\n",
            "NODE_FAIL",
            ": its compute node failed; start it again: Slurm runs it on a working node",
        ),
    ],
    ids=["memory-from-the-output", "node-from-accounting"],
)
def test_a_job_that_ends_before_its_server_answers_fails_the_start_with_its_reason(db, slurm, tmp_path, case):
    output, final, said = case
    spawner = new_spawner(db, slurm, tmp_path)
    spawner.apply_user_options(spawner, SMALL)
    (tmp_path / ".jupyterhub_slurmspawner_100.log").write_text(output)

    async def scenario():
        task = asyncio.ensure_future(spawner.start())
        await until(lambda: spawner.job_id, task=task)
        slurm.run("100")
        await until(lambda: spawner.ip == "127.0.0.1", task=task)
        slurm.end("100", final)
        return await task

    with pytest.raises(Exception) as raised:
        run(scenario())
    message = raised.value.jupyterhub_message
    assert message.startswith("Slurm job 100 ended before its server answered: "), message
    assert said in message, message
    assert ["sacct", "-n", "-P", "-j", "100", "-o", SACCT_FIELDS] in slurm.calls
    assert slurm.cancelled == []


def test_slurm_not_answering_keeps_the_server_and_a_lost_node_is_found_after_n_polls(db, slurm, tmp_path, caplog):
    spawner = new_spawner(db, slurm, tmp_path, unreachable_polls=2)
    node = NodeServer()

    async def scenario():
        await start_and_run(spawner, slurm, node)
        slurm.set_down()
        for _ in range(3):  # an outage: "unknown", never a stop
            assert await spawner.poll() is None
        slurm.set_down(False)
        await node.close()  # the node is gone; Slurm still lists the job as running
        assert await spawner.poll() is None  # one missed poll is not enough
        return await spawner.poll()

    caplog.set_level(logging.WARNING)
    assert run(scenario()) == 1
    assert "Slurm did not answer for job 100; keeping the server" in caplog.text
    assert "Server of alice (job 100) did not accept connections 2 polls in a row" in caplog.text
    assert slurm.cancelled == ["100"]
    assert spawner.get_state() == {}


def test_a_node_lost_after_a_hub_restart_is_still_found_from_the_stored_record(db, slurm, tmp_path, caplog):
    first = new_spawner(db, slurm, tmp_path)
    node = NodeServer()

    async def before_restart():
        await start_and_run(first, slurm, node)
        await node.close()  # this test's event loop ends with the "old hub"; the server is back at once below
        return first.get_state(), (first.server.ip, first.server.port)

    state, (ip, port) = run(before_restart())
    # the restarted hub: a new spawner with the stored state and server record, ip and port at their defaults
    second = new_spawner(db, slurm, tmp_path)
    second.load_state(state)
    second.server = record(db, ip, port)
    assert second.port == 0 and second.ip != ip  # its own values are the defaults again
    assert second.node_address == "127.0.0.1"

    caplog.set_level(logging.WARNING)
    assert run(polls_until_lost(second, node)) == 1
    assert f"Server of alice (job {state['job_id']}) did not accept connections 2 polls in a row" in caplog.text
    assert slurm.cancelled == [state["job_id"]]


def test_a_stop_while_slurm_is_down_leaves_the_job_to_the_orphan_check(db, slurm, tmp_path, caplog):
    spawner = new_spawner(db, slurm, tmp_path)
    node = NodeServer()

    async def scenario():
        await start_and_run(spawner, slurm, node)
        slurm.set_down()
        await spawner.stop()
        await node.close()

    caplog.set_level(logging.WARNING)
    run(scenario())
    assert "scancel of job 100 of alice failed" in caplog.text
    assert slurm.jobs["100"]["state"] == "RUNNING"  # the reaper's unit tests cover what happens next


def test_a_stop_cancels_the_job_and_waits_for_it_to_leave_the_queue(db, slurm, tmp_path):
    spawner = new_spawner(db, slurm, tmp_path)
    node = NodeServer()

    async def scenario():
        await start_and_run(spawner, slurm, node)
        await spawner.stop()
        await node.close()
        return await spawner.poll()

    assert run(scenario()) == 1
    assert slurm.cancelled == ["100"]
    assert [c[0] for c in slurm.calls].count("sbatch") == 1


def test_a_stop_asks_slurm_once_half_a_second_after_its_scancel(db, slurm, tmp_path):
    """The snapshot a start left (fresh, showing the job running) does not count: the one look is a squeue begun
    after the scancel, half a second later (a cancelled job takes about that to leave), shared by the stops of that
    moment, and it ends the wait (it took one look at once and another a second later)."""
    spawner = new_spawner(db, slurm, tmp_path, squeue_max_age=25.0)
    node = NodeServer()

    async def scenario():
        await start_and_run(spawner, slurm, node)
        before = [c[0] for c in slurm.calls].count("squeue")
        t0 = time.monotonic()
        await spawner.stop()
        took = time.monotonic() - t0
        await node.close()
        return took, [c[0] for c in slurm.calls].count("squeue") - before

    took, squeues = run(scenario())
    assert squeues == 1, slurm.calls
    assert 0.5 <= took < 0.9, took


def dispatcher_class():
    from clusterhub.hub.dispatch import ClusterSpawner  # noqa: PLC0415 - imports the Docker child's modules too

    return ClusterSpawner


@pytest.mark.parametrize("dispatched", [False, True], ids=["slurm", "dispatcher"])
def test_maintenance_refuses_a_start_before_anything_is_submitted(db, slurm, tmp_path, dispatched):
    (tmp_path / "maintenance").write_text("The cluster is down for maintenance until 18:00; try again then.\n")
    kind = {"spawner_class": dispatcher_class()} if dispatched else {}
    spawner = new_spawner(db, slurm, tmp_path, **kind)

    async def start():
        await spawner._run_apply_user_options(SMALL)  # a valid request: only the switch stops it
        await spawner.start()

    with pytest.raises(Exception) as raised:
        run(start())
    assert raised.value.status_code == 503
    assert "maintenance until 18:00" in raised.value.log_message
    assert slurm.calls == []


def test_the_slurm_spawner_and_the_dispatcher_show_one_form_with_the_switchs_notice(db, slurm, tmp_path):
    (tmp_path / "maintenance").write_text("Back at <18:00>.\n")
    plain = new_spawner(db, slurm, tmp_path)
    dispatcher = new_spawner(db, slurm, tmp_path, spawner_class=dispatcher_class())
    form = form_of(plain)
    assert form.startswith('<div class="alert alert-warning" role="alert">Back at &lt;18:00&gt;.</div>')
    assert 'value="small" checked' in form and 'name="partition"' in form
    # the same settings give the same form: without Docker settings the dispatcher offers nothing more
    assert form_of(dispatcher) == form
    (tmp_path / "maintenance").unlink()
    assert "alert" not in form_of(plain) and "alert" not in form_of(dispatcher)
    # the dispatcher's Docker settings add the Docker host's choices; the Slurm spawner has none
    dispatcher.profiles = [*dispatcher.profiles, {"slug": "box", "kind": "docker", "cpus": 2, "memory_gb": 4}]
    dispatcher.docker_images = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    dispatcher.host_gpus = 2
    docker_form = form_of(dispatcher)
    assert 'name="docker_image"' in docker_form and 'name="docker_gpus"' in docker_form
    # both read the form's fields back as single values, checked by apply_user_options
    fields = {"profile": ["small"], "image": [""]}
    assert plain.options_from_form(fields) == dispatcher.options_from_form(fields) == {"profile": "small", "image": ""}


def test_the_dispatcher_persists_the_childs_kind_and_a_restarted_hub_polls_the_same_job(db, slurm, tmp_path, caplog):
    ClusterSpawner = dispatcher_class()
    first = new_spawner(db, slurm, tmp_path, spawner_class=ClusterSpawner)
    node = NodeServer()

    async def before():
        await first.apply_user_options(first, SMALL)
        assert first.kind == "slurm"
        task = asyncio.ensure_future(first.start())
        await until(lambda: first.child.job_id, task=task)
        slurm.run(first.child.job_id)
        first.port = await node.open()  # batchspawner's API handler sets the port on the spawner JupyterHub knows
        ip, port = await task
        first.server.ip, first.server.port = ip, port
        await node.close()
        return first.get_state(), (ip, port)

    state, (ip, port) = run(before())
    assert state["kind"] == "slurm" and state["child"]["job_id"] == "100"
    second = new_spawner(db, slurm, tmp_path, spawner_class=ClusterSpawner)
    second.load_state(state)
    second.server = record(db, ip, port)
    assert type(second.child).__name__ == "ClusterSlurmSpawner" and second.child.job_id == "100"

    caplog.set_level(logging.WARNING)
    assert run(polls_until_lost(second, node)) == 1
    assert slurm.cancelled == ["100"]


def test_a_sites_form_template_replaces_the_form_and_a_broken_one_falls_back(db, slurm, tmp_path, caplog):
    site = tmp_path / "spawn-form.html.j2"
    site.write_text(
        '<p class="site">{{ notice }}</p>{% for p in profiles %}'
        '<input type="radio" name="profile" value="{{ p.slug }}">{{ p.display_name }}: {{ p.summary }}{% endfor %}'
    )
    (tmp_path / "maintenance").write_text("Back at <18:00>.\n")
    spawner = new_spawner(db, slurm, tmp_path, options_form_template=str(site))
    form = form_of(spawner)
    # the site's markup, with the same values as the packaged form, escaped the same way
    assert form.startswith('<p class="site">Back at &lt;18:00&gt;.</p>') and 'value="small"' in form
    assert "Small: 1 CPU, 1 GB, 1 h on batch" in form and 'name="partition"' not in form
    # a template that cannot render (here: a name the form does not give) is logged; users get the packaged form
    site.write_text("{{ banner_of_the_week }}")
    with caplog.at_level("ERROR"):
        form = form_of(spawner)
    assert 'name="partition"' in form and 'value="small" checked' in form
    assert "spawn form template failed to render" in caplog.text
    # so does one that is gone
    site.unlink()
    assert 'name="partition"' in form_of(spawner)
    assert "spawn-form.html.j2" in caplog.text


def test_the_form_says_when_slurm_would_start_each_profile_without_submitting_anything(db, slurm, tmp_path):
    plain = new_spawner(db, slurm, tmp_path)
    dispatcher = new_spawner(db, slurm, tmp_path, spawner_class=dispatcher_class())
    assert '<small class="clusterhub-start">(starts now)</small>' in form_of(plain)
    asks = [c for c in slurm.calls if c[0] == "sbatch"]
    assert len(asks) == 1 and "--test-only" in asks[0] and "--partition=batch" in asks[0]
    assert "--cpus-per-task=1" in asks[0] and "--mem=1G" in asks[0] and "--time=01:00:00" in asks[0]
    assert slurm.jobs == {}  # a question, not a job
    # the answer is kept for one poll interval, for every user and both spawners
    assert "(starts now)" in form_of(dispatcher)
    assert len([c for c in slurm.calls if c[0] == "sbatch"]) == 1
    later = (datetime.now() + timedelta(hours=2, minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    slurm.answer_test_only("batch", later)
    time.sleep(1.1)  # the harness's poll interval: 1 s
    assert f"expected wait about 2 h, from {later[11:16]} (Slurm&#39;s estimate)" in form_of(plain)
    slurm.answer_test_only("batch", "error: Batch job submission failed: Requested node configuration is not available")
    time.sleep(1.1)
    assert "(cannot start now: Requested node configuration is not available)" in form_of(plain)
    # Slurm down: the cards say nothing rather than guess
    slurm.set_down()
    time.sleep(1.1)
    form = form_of(plain)
    assert 'value="small" checked' in form and "clusterhub-start" not in form


def test_a_profiles_idle_limit_reaches_the_servers_command_line_and_no_other_profiles(db, slurm, tmp_path):
    brief = {"slug": "brief", "partition": "batch", "cpus": 1, "memory_gb": 1, "hours": 1, "idle_minutes": 0.5}
    spawner = new_spawner(db, slurm, tmp_path, profiles=[*new_spawner(db, slurm, tmp_path).profiles, brief])
    spawner.apply_user_options(spawner, {"profile": "brief"})
    assert "--ServerApp.shutdown_no_activity_timeout=30" in spawner.cmd_formatted_for_batch()
    spawner.apply_user_options(spawner, SMALL)
    assert "shutdown_no_activity" not in spawner.cmd_formatted_for_batch()
