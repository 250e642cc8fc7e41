"""The shape checks the roles' validation shares (filter_plugins/clusterhub_validate.py)."""

import pytest
from clusterhub_validate import (
    clusterhub_host_ok,
    clusterhub_not_found,
    clusterhub_port_clashes,
    clusterhub_port_ok,
    clusterhub_port_ranges,
    clusterhub_port_spans,
    clusterhub_url_ok,
    clusterhub_url_port,
)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("hub", True),
        ("jupyter.example.org", True),
        ("jupyter.example.org.", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("node_1", True),
        ("", False),
        ("-hub", False),
        ("hub-", False),
        ("hub example", False),
        ("hub..example", False),
        ("999.1.1.1", False),
        ("a" * 64, False),
        ("hub/x", False),
        (None, False),
        (8081, False),
    ],
)
def test_host(value, ok):
    assert clusterhub_host_ok(value) is ok


@pytest.mark.parametrize(
    ("value", "allow_zero", "ok"),
    [
        (1, False, True),
        (65535, False, True),
        ("8081", False, True),
        (0, False, False),
        (0, True, True),
        (65536, False, False),
        (-1, True, False),
        ("80a", False, False),
        (True, False, False),
        (None, False, False),
    ],
)
def test_port(value, allow_zero, ok):
    assert clusterhub_port_ok(value, allow_zero) is ok


@pytest.mark.parametrize(
    ("url", "kwargs", "ok"),
    [
        ("http://0.0.0.0:8081", {"port": True}, True),
        ("http://hub:8081/hub/api", {}, True),
        ("https://deb.debian.org/debian", {}, True),
        ("http://[::1]:8081", {"port": True}, True),
        ("http://hub", {"port": True}, False),
        ("http://hub:0", {}, False),
        ("http://hub:65536", {}, False),
        ("http://hub:80a", {}, False),
        ("ftp://hub/debian", {}, False),
        ("hub:8081", {}, False),
        ("http://", {}, False),
        ("http://hub name:8081", {}, False),
        ("http://user:pw@hub:8081", {}, False),
        ("http://-hub/", {}, False),
        ('http://hub/"x"', {}, False),
        ("file:///srv/mirror", {"schemes": ["file"]}, False),  # no host: file URLs are checked by their own rule
        ("postgresql://db/hub", {"schemes": ["postgresql"]}, True),
        (None, {}, False),
    ],
)
def test_url(url, kwargs, ok):
    assert clusterhub_url_ok(url, **kwargs) is ok


@pytest.mark.parametrize(
    ("url", "port"),
    [("http://0.0.0.0:8081", 8081), ("http://hub", 80), ("https://hub/x", 443), ("http://hub:99999", 0), ("x", 0)],
)
def test_url_port(url, port):
    assert clusterhub_url_port(url) == port


def test_port_clashes_name_both_variables_and_ignore_zero():
    assert clusterhub_port_clashes({"a": 443, "b": 80, "c": "443", "d": 0, "e": 0, "f": "x"}) == ["a and c (443)"]
    assert clusterhub_port_clashes({"a": 443, "b": 80}) == []


def test_not_found_lists_what_is_not_a_file_or_directory():
    results = [
        {"item": {"var": "cert", "path": "/c"}, "stat": {"exists": True, "isreg": True, "isdir": False}},
        {"item": {"var": "key", "path": "/k"}, "stat": {"exists": False}},
        {"item": {"var": "dir", "path": "/d"}, "stat": {"exists": True, "isreg": False, "isdir": True}},
        {"item": {"var": "off", "path": "/o"}, "skipped": True},
    ]
    assert clusterhub_not_found(results) == ["key (/k)", "dir (/d)"]
    assert clusterhub_not_found(results, "directory") == ["cert (/c)", "key (/k)"]


@pytest.mark.parametrize(
    ("items", "spans"),
    [
        (["47000-47999"], [[47000, 47999]]),
        ([20000, "20001", "20003-20004"], [[20000, 20001], [20003, 20004]]),
        (["30000-30010", "30005-30020", 30021], [[30000, 30021]]),  # overlapping and adjacent ones merge
        ([], []),
        (["*"], None),  # any port: a job could listen on the hub's own ports while they are free
        (["2000-1999"], None),
        ([80], None),  # below 1024
        (["60000-70000"], None),
        ([True], None),
        ("47000-47999", None),  # a string, not a list
        (["47000 - 47999"], None),
    ],
)
def test_port_spans(items, spans):
    assert clusterhub_port_spans(items) == spans


def test_port_ranges_expand_the_spans():
    assert clusterhub_port_ranges([20003, "20000-20001"]) == [20000, 20001, 20003]
    assert clusterhub_port_ranges(["*"]) == []
