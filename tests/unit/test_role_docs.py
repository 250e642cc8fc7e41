"""Role READMEs (tools/role_docs.py) and the agreement of meta/argument_specs.yml with defaults/main.yml."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import role_docs
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "role_docs.py"


ROLES = sorted(path.parents[1].name for path in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def main_options(role: str) -> dict[str, Any]:
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")
    return specs["argument_specs"]["main"].get("options") or {}


def entry_point_options(role: str) -> dict[str, Any]:
    """The options of every entry point (main, validate, and others such as tls_certificate's trust): defaults/main.yml
    serves them all."""
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]
    return {name: spec for entry in specs.values() for name, spec in (entry.get("options") or {}).items()}


def role_defaults(role: str) -> dict[str, Any]:
    return load(ROOT / "roles" / role / "defaults" / "main.yml") or {}


# --- (a) the committed READMEs are what the generator makes -------------------------------------------


def test_readmes_are_current():
    result = subprocess.run(
        [sys.executable, str(TOOL), "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"stale role READMEs; run `python tools/role_docs.py`:\n{result.stderr}"


def test_every_role_has_a_spec():
    assert ROLES, "no roles/*/meta/argument_specs.yml found"


# --- (b) rendering, on a synthetic role -----------------------------------------------------------------

SPEC = """\
---
argument_specs:
  main: &spec
    short_description: A tiny role for the generator's tests
    options:
      tiny_mode:
        type: str
        default: fast
        choices: [fast, "off"]
        description: How to run.
      tiny_items:
        type: list
        elements: dict
        description: Items, each a name and a kind.
        options:
          name: {type: str, required: true, description: "Item name."}
          kind: {type: str, default: plain, choices: [plain, fancy], description: "Kind of item."}
          extra:
            type: dict
            description: Nested dict.
            options:
              level: {type: int, default: 3, description: "Depth."}
      tiny_pipe: {type: str, default: "spec | default", description: "A | in the description."}
      tiny_long: {type: list, elements: str, description: "Long default."}
      tiny_spec_only: {type: int, default: 7, description: "Default only in the spec."}
      tiny_nothing: {type: str, description: "Gres=gpu:<type>:<count>."}
  validate: *spec
"""

DEFAULTS = """\
---
tiny_mode: "off"
tiny_items:
  - {name: a, kind: fancy}
tiny_pipe: "a|b"
tiny_long: [aaaaaaaaaa, bbbbbbbbbb, cccccccccc, dddddddddd, eeeeeeeeee, ffffffffff]
tiny_nothing: "{{ undefined_here }}"
"""


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    role = tmp_path / "roles" / "tiny"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(SPEC, encoding="utf-8")
    (role / "defaults" / "main.yml").write_text(DEFAULTS, encoding="utf-8")
    return tmp_path


def rows(readme: str) -> dict[str, list[str]]:
    """Table rows keyed by variable path (indentation kept in the first cell)."""
    table = {}
    for line in readme.splitlines():
        if line.startswith("| ") and "`" in line.split(" | ")[0]:
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            table[cells[0].split("`")[1]] = cells
    return table


def test_render_synthetic_role(tiny_root: Path):
    readme = role_docs.render(tiny_root / "roles" / "tiny")
    lines = readme.splitlines()
    assert lines[0] == role_docs.MARKER
    assert "# Role tiny" in lines
    assert "A tiny role for the generator's tests" in lines
    assert "| Variable | Type | Default | Description |" in lines
    assert "## Example" not in readme

    table = rows(readme)
    # Spec order, not alphabetical; nested options follow their parent.
    assert list(table) == [
        "tiny_mode",
        "tiny_items",
        "tiny_items[].name",
        "tiny_items[].kind",
        "tiny_items[].extra",
        "tiny_items[].extra.level",
        "tiny_pipe",
        "tiny_long",
        "tiny_spec_only",
        "tiny_nothing",
    ]
    # defaults/main.yml wins over the spec's default; choices appended.
    assert table["tiny_mode"] == ["`tiny_mode`", "str", "`'off'`", "How to run. One of: `fast`, `'off'`."]
    assert table["tiny_items"][1:3] == ["list of dict", "`[{name: a, kind: fancy}]`"]
    # Nested options: indented, full path, required marked, spec defaults and choices.
    assert table["tiny_items[].name"] == ["&emsp;`tiny_items[].name`", "str", "**required**", "Item name."]
    assert table["tiny_items[].kind"] == [
        "&emsp;`tiny_items[].kind`",
        "str",
        "`plain`",
        "Kind of item. One of: `plain`, `fancy`.",
    ]
    assert table["tiny_items[].extra"][:3] == ["&emsp;`tiny_items[].extra`", "dict", ""]
    assert table["tiny_items[].extra.level"][:3] == ["&emsp;&emsp;`tiny_items[].extra.level`", "int", "`3`"]
    # `|` escaped in defaults and descriptions, so the table keeps four columns.
    assert "| `tiny_pipe` | str | `a\\|b` | A \\| in the description. |" in lines
    # Long values truncated to 60 characters with an ellipsis.
    long_default = table["tiny_long"][2].strip("`")
    assert len(long_default) == role_docs.MAX_VALUE_CHARS
    assert long_default.startswith("[aaaaaaaaaa, bbbbbbbbbb, ")
    assert long_default.endswith("…")
    # No defaults/main.yml entry: the spec's default; Jinja shown as written; `<` kept out of HTML.
    assert table["tiny_spec_only"][2] == "`7`"
    assert table["tiny_nothing"][2:] == ["`'{{ undefined_here }}'`", "Gres=gpu:&lt;type>:&lt;count>."]


def test_example_included_verbatim(tiny_root: Path):
    example = "---\n- hosts: all\n  roles:\n    - role: tiny  # a comment\n      tiny_mode: fast\n"
    (tiny_root / "roles" / "tiny" / "meta" / "example.yml").write_text(example, encoding="utf-8")
    readme = role_docs.render(tiny_root / "roles" / "tiny")
    assert f"## Example\n\n```yaml\n{example}```\n" in readme


def test_render_is_deterministic(tiny_root: Path):
    assert role_docs.render(tiny_root / "roles" / "tiny") == role_docs.render(tiny_root / "roles" / "tiny")


def test_check_and_write_modes(tiny_root: Path, capsys: pytest.CaptureFixture[str]):
    readme = tiny_root / "roles" / "tiny" / "README.md"
    assert role_docs.main(["--check", "--root", str(tiny_root)]) == 1
    assert not readme.exists()
    assert "roles/tiny/README.md" in capsys.readouterr().err

    assert role_docs.main(["--root", str(tiny_root)]) == 0
    assert readme.read_text(encoding="utf-8") == role_docs.render(tiny_root / "roles" / "tiny")
    assert role_docs.main(["--check", "--root", str(tiny_root)]) == 0

    readme.write_text(readme.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert role_docs.main(["--check", "--root", str(tiny_root)]) == 1
    assert readme.read_text(encoding="utf-8").endswith("hand edit\n")


# --- (c) argument_specs `main` and defaults/main.yml agree ------------------------------------------------


def has_jinja(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(has_jinja(key) or has_jinja(item) for key, item in value.items())
    if isinstance(value, list):
        return any(has_jinja(item) for item in value)
    return False


def is_plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None)) and not has_jinja(value)


def canonical(value: Any) -> str:
    """Strict comparison: 1, 1.0 and true differ; dict key order does not matter."""
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("role", ROLES)
def test_variables_use_role_prefix(role: str):
    prefix = f"{role}_"
    stray = sorted(name for name in [*role_defaults(role), *main_options(role)] if not name.startswith(prefix))
    assert not stray, f"{role}: variables without the {prefix} prefix: {stray}"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_spec_declare_the_same_variables(role: str):
    prefix = f"{role}_"
    options = {name: spec or {} for name, spec in entry_point_options(role).items() if name.startswith(prefix)}
    defaults = {name for name in role_defaults(role) if name.startswith(prefix)}
    undeclared = sorted(defaults - set(options))
    # A required option legitimately has no default.
    undefaulted = sorted(name for name, spec in options.items() if name not in defaults and not spec.get("required"))
    assert not undeclared, f"{role}: in defaults/main.yml but in no entry point of argument_specs: {undeclared}"
    assert not undefaulted, f"{role}: in argument_specs but not in defaults/main.yml: {undefaulted}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_role_defaults(role: str):
    defaults = role_defaults(role)
    differ = []
    for name, option in main_options(role).items():
        spec = option or {}
        if "default" not in spec or name not in defaults:
            continue
        ours, theirs = spec["default"], defaults[name]
        if is_plain(ours) and is_plain(theirs) and canonical(ours) != canonical(theirs):
            differ.append(f"{name}: spec {canonical(ours)} != defaults/main.yml {canonical(theirs)}")
    assert not differ, f"{role}: " + "; ".join(differ)
