"""The documentation says what the code does."""

from __future__ import annotations

import re

from helpers import ROOT, TESTDATA, clip, curator
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
    section = text.split("## Columns of the table", 1)[1]
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


def test_workspace_format_snippet_reads_the_table(tmp_path):
    """docs/workspace.md's plain pandas/NumPy reader gives what curator reads, on a workspace of two shards
    and two column groups, one of them shorter than the table."""
    import os

    import numpy as np
    import pandas as pd

    from curator.workspace import read_embeddings

    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", check=True)
    curator("curate", "-w", ws, "--budget", "5", check=True)
    curator("extract", clip("driving_d6.mp4"), "-w", ws, "-q", check=True)
    (block,) = [b for b in python_blocks("workspace.md") if "glob" in b]
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block, "docs/workspace.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    w = open_workspace(ws)
    ours = read_table(w)
    assert len(list((ws / "faces").glob("*.parquet"))) == 2 and ours["selected"].isna().any()
    def missing_as_none(frame: pd.DataFrame) -> pd.DataFrame:  # the join writes NaN past a group's end, curator None
        out = frame.copy()
        for c in out.columns[out.dtypes == object]:
            out[c] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in out[c]]
        return out

    pd.testing.assert_frame_equal(missing_as_none(namespace["faces"][list(ours.columns)]), missing_as_none(ours),
                                  check_dtype=False)
    np.testing.assert_array_equal(namespace["emb"], np.asarray(read_embeddings(w)))


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


def python_blocks(md: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / md).read_text(), flags=re.S)


def test_api_examples_run_as_written(tmp_path, capsys):
    """docs/api.md's examples, every block in order, from a folder beside `shared/` as the repository is."""
    import os

    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").symlink_to(TESTDATA.parent)
    blocks = python_blocks("api.md")
    assert len(blocks) >= 4
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(project)
    try:
        for block in blocks:
            exec(compile(block, "docs/api.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "faces selected of" in printed and "exported to" in printed
    assert "my script" in printed and "give exactly one of --budget or --minutes" in printed
    assert (project / "faceset" / "manifest.parquet").is_file() and (project / "selected.html").is_file()


# Files of this project that code, help text, pyproject.toml and docs may name.
PROJECT_PATH = re.compile(r"(?<![\w./-])((?:docs|bench|tests|curator|trainer|\.ci)/[\w./-]*?\.(?:md|py|json|sh|toml|txt|csv)"
                          r"|README\.md|pyproject\.toml)(?![\w-])")


def named_paths(text: str) -> set[str]:
    """Project paths named in `text`: `docs/x.md`, `bench/y.py`, `curator/z.py`, ... (no globs, no folders ending in /)."""
    found = set()
    for match in PROJECT_PATH.finditer(text):
        path = match.group(1).rstrip(".")
        if any(ch in text[match.end():match.end() + 1] for ch in "*{") or "*" in path:
            continue  # a pattern such as docs/*.md
        found.add(path)
    return found


def test_every_named_project_file_exists():
    """A reference to a file of this project that does not exist (docs/identity.md, say) fails here, wherever it is
    written: code, tests, benchmarks, docs, pyproject.toml, CI, or a command's --help. (This file names example
    paths on purpose and is left out.)"""
    sources = [*ROOT.glob("curator/*.py"), *ROOT.glob("trainer/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py"),
               *ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "pyproject.toml", *ROOT.glob(".ci/*")]
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in sources if p.name != "test_docs.py"}
    out = curator("--help", check=True).stdout
    commands = re.findall(r"│ (\w+)\s{2,}", out)
    texts.update({f"curator {cmd} --help": curator(cmd, "--help", check=True).stdout for cmd in commands})
    missing: dict = {}
    for where, text in texts.items():
        for path in named_paths(text):
            if not (ROOT / path).exists() and not path.startswith("bench/out/"):  # bench/out/: benchmark scratch
                missing.setdefault(path, []).append(where)
    assert not missing, f"named but missing: {missing}"
    assert named_paths("see docs/identity.md.") == {"docs/identity.md"} and not named_paths("all of docs/*.md")
    assert not named_paths("bench/common.build_footage builds it")  # a function, not a file


def test_every_command_is_the_api_function_of_the_same_name_with_the_same_options():
    """docs/api.md: `curator COMMAND --option` is `api.COMMAND(option=)`, for every command and every option
    (--json and --quiet only choose how the command prints; callbacks `on_*` are how the API reports progress)."""
    import inspect

    from typer.main import get_command

    from curator import api, cli

    printing = {"as_json", "quiet"}
    for name, command in get_command(cli.app).commands.items():
        function = getattr(api, name, None)
        assert callable(function), f"curator {name} has no api.{name}"
        arguments = {n for n in inspect.signature(function).parameters if not n.startswith("on_")}
        options = {p.name for p in command.params} - (printing - arguments)  # train's `quiet` is an API option too
        assert options == arguments, (name, sorted(options ^ arguments))
