"""A notebook run's parameters: typed values from the shell (`-p alpha=0.5`), a form or a REST body, checked, and
expanded into one set per task of a sweep.

Values are numbers, booleans, null, strings and flat lists of those; papermill injects them into the cell tagged
`parameters` in the kernel's own language. Names are identifiers (they become variables in the notebook). A sweep
names one list parameter: each of its values becomes one task of a Slurm job array.
"""

from __future__ import annotations

import json
import math
import re

from clusterhub.hub.request import OptionsError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
INT = re.compile(r"^[+-]?\d{1,18}$")
FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
MAX_PARAMETERS = 100
MAX_STRING = 4096
MAX_LIST = 1000
MAX_SWEEP = 1000
Scalar = int | float | bool | str | None


def parse_value(text: str) -> Scalar | list:
    """A value typed on a command line: 5 -> int, 0.5 / 1e-3 -> float, true/false, null/none, [1, 2] or ["a"]
    (JSON) -> list, "quoted" -> that string; anything else is the string as typed. A JSON object parses, and
    check_parameters refuses it."""
    word = text.strip()
    if INT.match(word):
        return int(word)
    if FLOAT.match(word):
        return float(word)
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    if word.startswith(("[", "{", '"')):
        try:
            return json.loads(word)
        except ValueError as exc:
            raise OptionsError(f"{word[:40]!r} looks like JSON but is not: {exc}") from None
    return text


def typed(texts: dict) -> dict:
    """{name: value as typed text} (the CLI's -p, jupyter-scheduler's form: parameters_as_text) into typed values;
    check_parameters (run by job.build) then checks names and values."""
    return {name: parse_value(str(value)) for name, value in texts.items()}


def _check_scalar(name: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionsError(f"parameter {name}: {value} is not a finite number")
    if isinstance(value, str) and (len(value) > MAX_STRING or "\x00" in value):
        raise OptionsError(f"parameter {name}: strings are at most {MAX_STRING} characters, without NUL")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise OptionsError(f"parameter {name}: a number, true/false, null, a string or a list of those")


def check_parameters(params) -> dict:
    """params as given (a mapping of names to values), checked: identifiers, scalars or flat lists of them."""
    if not isinstance(params, dict):
        raise OptionsError("parameters must be a mapping of names to values")
    if len(params) > MAX_PARAMETERS:
        raise OptionsError(f"at most {MAX_PARAMETERS} parameters")
    for name, value in params.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise OptionsError(f"parameter name {str(name)[:40]!r} must be an identifier (letters, digits, _)")
        if isinstance(value, list):
            if len(value) > MAX_LIST:
                raise OptionsError(f"parameter {name}: lists hold at most {MAX_LIST} values")
            for item in value:
                _check_scalar(name, item)
        else:
            _check_scalar(name, value)
    return dict(params)


def parameter_sets(params: dict, sweep: str | None = None) -> list[dict]:
    """The parameters of each task: one set, or with a sweep one set per value of the list parameter `sweep`."""
    params = check_parameters(params)
    if not sweep:
        return [params]
    if sweep not in params:
        raise OptionsError(f"the sweep names {sweep[:40]!r}, which is not one of the parameters")
    values = params[sweep]
    if not isinstance(values, list) or not 2 <= len(values) <= MAX_SWEEP:
        raise OptionsError(f"the sweep parameter {sweep} must be a list of 2 to {MAX_SWEEP} values")
    return [{**params, sweep: value} for value in values]
