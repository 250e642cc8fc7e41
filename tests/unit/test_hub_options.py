"""The hub's resource form and request validation (src/clusterhub/hub/form.py, request.py, rules.py)."""

import pytest

from clusterhub.hub import form
from clusterhub.hub.form import render_form
from clusterhub.hub.request import OptionsError, idle_args, validate_options
from clusterhub.hub.rules import config_errors

PARTS = [
    {"name": "jupyter", "max_cpus": 4, "max_memory_gb": 8, "max_hours": 12, "max_gpus": 0},
    {"name": "gpu", "max_cpus": 16, "max_memory_gb": 64, "max_hours": 24, "max_gpus": 2},
]
PROFILES = [
    {"slug": "small", "display_name": "Small", "partition": "jupyter", "cpus": 1, "memory_gb": 2, "hours": 2},
    {"slug": "onegpu", "display_name": "1 GPU", "partition": "gpu", "cpus": 4, "memory_gb": 16, "hours": 4, "gpus": 1},
]
IMAGES = [{"name": "base", "path": "/images/base.sif"}, {"name": "tf", "path": "/images/tf.sif"}]


def test_a_profile_becomes_a_request():
    req = validate_options({"profile": ["onegpu"]}, PROFILES, PARTS)
    assert (req.partition, req.cpus, req.memory_gb, req.gpus, req.runtime) == ("gpu", 4, 16, 1, "04:00:00")


def test_no_choice_means_the_first_profile():
    assert validate_options({}, PROFILES, PARTS).profile == "small"


def test_custom_within_limits():
    req = validate_options(
        {"profile": "custom", "partition": "gpu", "cpus": "8", "memory_gb": "32", "hours": "1.5", "gpus": "2"},
        PROFILES,
        PARTS,
    )
    assert (req.cpus, req.memory_gb, req.hours, req.gpus, req.runtime) == (8, 32, 1.5, 2, "01:30:00")
    assert req.as_user_options()["partition"] == "gpu"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"partition": "jupyter", "cpus": "5"}, "5 CPUs requested; partition jupyter allows 1 to 4 CPUs"),
        ({"partition": "jupyter", "memory_gb": "9"}, "9 GB memory requested; partition jupyter allows 1 to 8 GB"),
        ({"partition": "jupyter", "hours": "13"}, "13 hours requested; partition jupyter allows 0.25 to 12 hours"),
        ({"partition": "jupyter", "gpus": "1"}, "1 GPUs requested; partition jupyter has no GPUs"),
        ({"partition": "gpu", "gpus": "3"}, "3 GPUs requested; partition gpu allows 0 to 2 GPUs"),
        ({"partition": "jupyter", "cpus": "0"}, "0 CPUs requested"),
        ({"partition": "nope"}, "unknown partition 'nope'; choose one of jupyter, gpu"),
        ({"partition": "jupyter;reboot"}, "unknown partition"),
        ({"partition": "jupyter", "cpus": "2; rm -rf ~"}, "cpus must be a number"),
        ({"partition": "jupyter", "cpus": "1\n#SBATCH --uid=0"}, "cpus must be a number"),
        ({"partition": "jupyter", "cpus": "-1"}, "cpus must be a number"),
        ({"partition": "jupyter", "hours": "1e3"}, "hours must be a number"),
        ({"partition": "jupyter", "cpus": True}, "cpus must be a number"),
        ({"partition": "jupyter", "image": "../../etc/shadow"}, "unknown image"),
    ],
)
def test_custom_requests_outside_the_rules_are_refused(raw, message):
    with pytest.raises(OptionsError) as e:
        validate_options({"profile": "custom", **raw}, PROFILES, PARTS, IMAGES)
    assert message in str(e.value)


def test_unknown_profile_and_custom_when_not_offered():
    with pytest.raises(OptionsError, match="unknown profile 'huge'"):
        validate_options({"profile": "huge"}, PROFILES, PARTS)
    with pytest.raises(OptionsError, match="custom resources are not offered"):
        validate_options({"profile": "custom", "partition": "jupyter"}, PROFILES, PARTS, allow_custom=False)


def test_images_default_to_the_first_and_must_be_known():
    assert validate_options({"profile": "small"}, PROFILES, PARTS, IMAGES).image == "base"
    assert validate_options({"profile": "small", "image": "tf"}, PROFILES, PARTS, IMAGES).image == "tf"


def test_a_good_site_configuration_has_no_errors():
    assert config_errors(PROFILES, PARTS, IMAGES) == []


@pytest.mark.parametrize(
    ("profiles", "partitions", "message"),
    [
        (
            [{"slug": "x", "partition": "jupyter", "gpus": 1}],
            PARTS,
            "jupyterhub_profiles (x): 1 GPUs requested; partition jupyter has no GPUs",
        ),
        (
            [{"slug": "x", "partition": "nowhere"}],
            PARTS,
            "jupyterhub_profiles (x): partition 'nowhere' is not in jupyterhub_partitions",
        ),
        (
            [{"slug": "x", "partition": "jupyter"}, {"slug": "x", "partition": "jupyter"}],
            PARTS,
            "the slug 'x' is used more than once",
        ),
        ([{"slug": "custom", "partition": "jupyter"}], PARTS, "slug must be lower-case"),
        ([{"slug": "x", "partition": "jupyter", "image": "nope"}], PARTS, "image 'nope' is not in jupyterhub_images"),
        ([{"slug": "x", "partition": "jupyter", "idle_minutes": 0}], PARTS, "idle_minutes must be a positive number"),
        ([{"slug": "x", "partition": "jupyter", "idle_minutes": "5"}], PARTS, "idle_minutes must be a positive number"),
        (
            [{"slug": "x", "partition": "jupyter", "hours": 1, "idle_minutes": 90}],
            PARTS,
            "idle_minutes (90) must be less than the profile's 1 h",
        ),
        ([], [], "jupyterhub_partitions is empty"),
        ([], [{"name": "p", "max_cpus": 0, "max_memory_gb": 1, "max_hours": 1}], "max_cpus must be a positive number"),
    ],
)
def test_site_configuration_errors_name_the_variable(profiles, partitions, message):
    assert any(message in e for e in config_errors(profiles, partitions, IMAGES)), config_errors(
        profiles, partitions, IMAGES
    )


def test_a_profiles_idle_limit_becomes_the_servers_own_culling_and_the_card_says_it():
    assert idle_args(30) == [
        "--MappingKernelManager.cull_idle_timeout=1800",
        "--MappingKernelManager.cull_interval=60",
        "--TerminalManager.cull_inactive_timeout=1800",
        "--TerminalManager.cull_interval=60",
        "--ServerApp.shutdown_no_activity_timeout=1800",
    ]
    assert idle_args(0.5)[-1] == "--ServerApp.shutdown_no_activity_timeout=30"
    assert config_errors([{**PROFILES[0], "idle_minutes": 30}], PARTS, IMAGES) == []
    html = render_form([{**PROFILES[0], "idle_minutes": 30}, {**PROFILES[0], "slug": "b", "idle_minutes": 0.5}], PARTS)
    assert "stops when idle 30 min" in html and "stops when idle 30 s" in html


def test_form_escapes_and_offers_gpus_only_where_a_partition_has_them():
    html = render_form([{**PROFILES[0], "display_name": "<b>x</b>"}], PARTS[:1], notice="down <now>")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "down &lt;now&gt;" in html
    assert 'name="gpus"' not in html
    assert 'name="gpus"' in render_form(PROFILES, PARTS)
    assert 'value="custom"' not in render_form(PROFILES, PARTS, allow_custom=False)


def test_maintenance_notice_is_the_files_text_or_a_default(tmp_path):
    switch = tmp_path / "maintenance"
    assert form.maintenance_notice(str(switch)) == ""
    switch.write_text("Back at 14:00.\n")
    assert form.maintenance_notice(str(switch)) == "Back at 14:00."
    switch.write_text("  \n")
    assert form.maintenance_notice(str(switch)) == form.MAINTENANCE_DEFAULT


def test_a_site_template_is_checked_with_the_inventorys_settings():
    settings = (PROFILES, PARTS, [], True, "")
    assert form.template_error(form.default_template(), *settings) == ""
    assert form.template_error("{% for p in profiles %}{{ p.slug }}{% endfor %}", *settings) == ""
    assert form.template_error("{% if notice %}", *settings).startswith("line 1: ")
    assert "'banner' is undefined" in form.template_error("{{ banner }}", *settings)
    # what the packaged form renders from is exactly what a site's template is told it gets (its header)
    header = form.default_template().split("-#}", 1)[0]
    for name in form.form_context(*settings):
        assert name in header, name
