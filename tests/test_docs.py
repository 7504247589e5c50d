"""The documentation says what the code does."""

from __future__ import annotations

import re

from conftest import ROOT, clip, curator
from curator.workspace import open_workspace, read_table


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(bash \.ci/install\.sh[^\n]*)\n```", text)


def test_ci_runs_the_readme_test_command():
    main_cmd, test_cmd = readme_commands()
    assert "curator run" in main_cmd and "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


def documented_columns() -> set[str]:
    text = (ROOT / "docs" / "workspace.md").read_text()
    section = text.split("## Columns of `faces.parquet`", 1)[1]
    names = set()
    for first_cell in re.findall(r"^\| (`[^|]+`) \|", section, flags=re.M):
        names.update(re.findall(r"`([a-z0-9_]+)`", first_cell))
    return names


def test_every_column_written_is_documented(tmp_path):
    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", check=True)
    curator("curate", "-w", ws, "--budget", "5", check=True)  # runs identify too
    columns = set(read_table(open_workspace(ws)).columns)
    documented = documented_columns()
    assert columns - documented == set(), f"undocumented columns: {sorted(columns - documented)}"
    # written only with a 3D-68 pack, by review, by verify --repair:
    assert documented - columns <= {"lmk68", "rejected", "kept", "review_tags", "crop_missing"}


def test_every_command_has_help_with_examples():
    out = curator("--help", check=True).stdout
    commands = re.findall(r"│ (\w+)\s{2,}", out)
    assert {"extract", "identify", "identities", "curate", "export", "run"} <= set(commands)
    for cmd in commands:
        help_text = curator(cmd, "--help", check=True).stdout
        assert "Examples" in help_text, cmd


def test_docs_links_resolve():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)#:]+)\)", md.read_text()):
            assert (md.parent / link).exists(), f"{md.name} links to missing {link}"
