"""Turn a pinned requirements file into the list of specifiers ansible.builtin.pip takes by name."""

from __future__ import annotations


def clusterhub_requirements(text: str) -> list[str]:
    """Requirement lines without comments and blanks; options such as `-r` are refused, not dropped."""
    specs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(f"requirements option {line!r} is not supported here: list pinned packages only")
        specs.append(line)
    return specs


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"clusterhub_requirements": clusterhub_requirements}
