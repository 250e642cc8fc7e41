"""Job definitions' cron schedules (src/clusterhub/runs/schedule.py): the syntax, the next firing in a time zone,
DST, and the refusals a user reads."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from clusterhub.hub.request import OptionsError
from clusterhub.runs.schedule import parse


def at(text: str, zone=UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(t: float, zone=UTC) -> str:
    return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M %a")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2026-12-02 10:00:30", "2026-12-02 10:01 Wed"),
        ("*/15 * * * *", "2026-12-02 10:01", "2026-12-02 10:15 Wed"),
        ("0 6 * * 1", "2026-12-02 10:00", "2026-12-07 06:00 Mon"),  # Mondays at 06:00
        ("0 6 * * mon", "2026-12-02 10:00", "2026-12-07 06:00 Mon"),
        ("30 8-10/2 * * *", "2026-12-02 08:30", "2026-12-02 10:30 Wed"),
        ("0 0 1 jan *", "2026-12-02 00:00", "2027-01-01 00:00 Fri"),
        ("0 0 29 2 *", "2026-12-02 00:00", "2028-02-29 00:00 Tue"),
        ("5,35 * * * *", "2026-12-02 10:05", "2026-12-02 10:35 Wed"),
        ("0 12 * * 7", "2026-12-02 00:00", "2026-12-06 12:00 Sun"),  # 7 is Sunday too
        # both day fields restricted: either matches (cron's rule): the 15th, or a Friday
        ("0 0 15 * 5", "2026-12-02 00:00", "2026-12-04 00:00 Fri"),
        ("0 0 15 * 5", "2026-12-11 00:00", "2026-12-15 00:00 Tue"),
        ("@daily", "2026-12-02 10:00", "2026-12-03 00:00 Thu"),
        ("@hourly", "2026-12-02 10:00", "2026-12-02 11:00 Wed"),
    ],
)
def test_the_next_firing(expression, after, expected):
    assert local(parse(expression).next_after(at(after))) == expected


def test_a_schedule_fires_in_its_own_time_zone():
    helsinki = ZoneInfo("Europe/Helsinki")
    every_morning = parse("0 6 * * *", "Europe/Helsinki")
    t = every_morning.next_after(at("2026-12-02 10:00"))
    assert local(t, helsinki) == "2026-12-03 06:00 Thu" and local(t) == "2026-12-03 04:00 Thu"


def test_a_time_that_dst_skips_does_not_fire_and_one_it_repeats_fires_once():
    berlin = ZoneInfo("Europe/Berlin")
    # 2027-03-28: 02:00 to 03:00 does not exist in Berlin; the 02:30 firing is skipped to the next day
    skipped = parse("30 2 * * *", "Europe/Berlin").next_after(at("2027-03-27 12:00", berlin))
    assert local(skipped, berlin) == "2027-03-29 02:30 Mon"
    # 2027-10-31: 02:30 happens twice; it fires at the first, and the second is not another firing
    repeated = parse("30 2 * * *", "Europe/Berlin")
    first = repeated.next_after(at("2027-10-30 12:00", berlin))
    assert local(first, berlin) == "2027-10-31 02:30 Sun"
    assert local(repeated.next_after(first), berlin) == "2027-11-01 02:30 Mon"


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("", "UTC", "it is empty"),
        ("* * * *", "UTC", "it has 4 fields, not 5"),
        ("60 * * * *", "UTC", "the minute field takes 0 to 59, not 60"),
        ("* 24 * * *", "UTC", "the hour field takes 0 to 23"),
        ("* * 0 * *", "UTC", "the day of month field takes 1 to 31"),
        ("* * * 13 *", "UTC", "the month field takes 1 to 12"),
        ("*/0 * * * *", "UTC", "must be a positive number"),
        ("5-1 * * * *", "UTC", "runs backwards"),
        ("0 0 30 2 *", "UTC", "it never fires"),
        ("* * * * * ; id", "UTC", "may hold only"),
        ("$(id) * * * *", "UTC", "may hold only"),
        ("x * * * *", "UTC", "'x' in the minute field is not a number"),
        ("@reboot", "UTC", "may hold only"),
        ("* * * * *", "Mars/Olympus", "not a time zone this hub knows"),
        ("* * * * *", "../../etc/passwd", "not a time zone name"),
    ],
)
def test_a_bad_schedule_is_refused_saying_why(expression, timezone, message):
    with pytest.raises(OptionsError) as raised:
        parse(expression, timezone)
    assert message in str(raised.value)
    if "time zone" not in message:
        assert "minute, hour, day of month, month and day of week" in str(raised.value)
