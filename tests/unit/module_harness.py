"""What the tests that run a library module's main() in process share."""

from __future__ import annotations


class Exited(Exception):
    """Raised by the tests' exit_json / fail_json in place of the module's exit, carrying its result."""

    def __init__(self, failed, result):
        super().__init__(result.get("msg"))
        self.failed = failed
        self.result = result
