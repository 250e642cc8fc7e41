"""Job definitions' schedules: cron's five fields (minute, hour, day of month, month, day of week) read in a time
zone of the user's choosing, and the next time a schedule fires.

The syntax is Vixie cron's: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, month and weekday
names (jan..dec, sun..sat; 0 and 7 are Sunday), and the macros @hourly, @daily, @weekly, @monthly, @yearly. When
both day fields are restricted a day matches either of them, as in cron. Wall-clock times that a DST change skips
do not fire; a time that occurs twice fires once (its first occurrence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clusterhub.hub.request import OptionsError

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = {
    name: n
    for n, name in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}
WEEKDAYS = {name: n for n, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names)
FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, WEEKDAYS),
)
TZ_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$")
# a schedule that matches nothing within this many days (31 February) is refused
HORIZON_DAYS = 366 * 8
EXAMPLE = "for example '0 6 * * 1' for Mondays at 06:00, or '*/30 * * * *' every half hour"


def _bad(expression: str, why: str) -> OptionsError:
    return OptionsError(
        f"schedule {expression[:60]!r} is not a cron schedule ({why}): give minute, hour, day of month, month and "
        f"day of week, {EXAMPLE}"
    )


def _field(expression: str, text: str, spec: tuple[str, int, int, dict]) -> frozenset[int]:
    name, low, high, names = spec
    values: set[int] = set()

    def number(word: str) -> int:
        word = word.lower()
        if word in names:
            return names[word]
        if not word.isdigit():
            raise _bad(expression, f"{word[:12]!r} in the {name} field is not a number")
        value = int(word)
        if not low <= value <= high:
            raise _bad(expression, f"the {name} field takes {low} to {high}, not {value}")
        return value

    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise _bad(expression, f"the step {step_text[:12]!r} in the {name} field must be a positive number")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = number(a), number(b)
            if first > last:
                raise _bad(expression, f"the range {span} in the {name} field runs backwards")
        else:
            first = number(span)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    expression: str
    timezone: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # the day of month field is *
    any_weekday: bool  # the day of week field is *

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: float) -> float:
        """The first time (epoch seconds) after `after` at which the schedule fires."""
        zone = zone_of(self.timezone)
        start = datetime.fromtimestamp(after, zone)
        for offset in range(HORIZON_DAYS):
            day = start.date() + timedelta(days=offset)
            if not self._day_matches(day):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
                    moment = local.timestamp()
                    if moment <= after:
                        continue
                    # a wall-clock time the zone skips (DST starts) does not round-trip: it does not fire
                    if datetime.fromtimestamp(moment, zone).replace(tzinfo=None) != local.replace(tzinfo=None):
                        continue
                    return moment
        raise _bad(self.expression, f"it never fires within {HORIZON_DAYS // 366} years")


def zone_of(name: str) -> tzinfo:
    if name in ("", "UTC", "Etc/UTC"):
        return UTC
    if not TZ_RE.match(name) or ".." in name:
        raise OptionsError(f"timezone {name[:60]!r} is not a time zone name (like UTC or Europe/Helsinki)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise OptionsError(
            f"timezone {name[:60]!r} is not a time zone this hub knows (like UTC or Europe/Helsinki)"
        ) from None


def parse(expression: str, timezone: str = "UTC") -> Schedule:
    """The schedule, checked (OptionsError names what is wrong); it must fire at least once within the horizon."""
    if not isinstance(expression, str) or not expression.strip():
        raise _bad(str(expression), "it is empty")
    text = MACROS.get(expression.strip().lower(), expression.strip())
    if len(text) > 120 or not re.match(r"^[A-Za-z0-9*/,\- ]+$", text):
        raise _bad(expression, "it may hold only numbers, names, '*', '/', ',', '-' and spaces")
    words = text.split()
    if len(words) != 5:
        raise _bad(expression, f"it has {len(words)} fields, not 5")
    sets = [_field(expression, word, spec) for word, spec in zip(words, FIELDS, strict=True)]
    zone_of(timezone or "UTC")
    weekdays = frozenset(d % 7 for d in sets[4])
    schedule = Schedule(
        expression=expression.strip(),
        timezone=timezone or "UTC",
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        any_day=words[2].startswith("*"),
        any_weekday=words[4].startswith("*"),
    )
    schedule.next_after(datetime(2024, 1, 1, tzinfo=UTC).timestamp())  # never-firing schedules are refused here
    return schedule
