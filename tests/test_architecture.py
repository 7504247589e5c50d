"""The package's shape: the import graph has no cycle and no import that climbs back up or goes sideways
(.ci/import_graph.py, docs/architecture.md), and the workspace's files are touched only by curator.workspace."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import ROOT, load_script

pytestmark = pytest.mark.pure


def _graph():
    return load_script(".ci/import_graph.py", "import_graph")


def test_import_graph_has_no_cycle_and_no_upward_or_sideways_import():
    problems, graph = _graph().check()
    assert not problems, "\n".join(problems)
    assert len(graph) > 50  # every module was read, not an empty walk


def test_the_checker_sees_a_cycle_and_an_upward_import():
    g = _graph()
    cyc = g.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()})
    assert cyc and set(cyc[0]) == {"a", "b", "c"}
    assert g.LAYER_OF[g.unit_of("curator.reports.audit")] > g.LAYER_OF[g.unit_of("curator.curate")]
    assert g.LAYER_OF[g.unit_of("curator.workspace.table")] < g.LAYER_OF[g.unit_of("curator.extract.driver")]


def test_the_script_exits_nonzero_only_on_problems():
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "import_graph.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert "no cycle" in proc.stdout


# A path into a workspace: its root joined with a name, or its files named. Only curator/workspace/ may do either
# (an export's own embeddings.npy or a summary's "identities" key are not the workspace's).
WORKSPACE_FILES = re.compile(r"""\.root\s*/|/\s*["']workspace\.json["']|["'](identities|staging|crops)["']\s*/|/\s*["'](crops|staging|identities)["']""")


def test_only_the_workspace_package_names_the_workspace_files():
    offenders = []
    for path in sorted((ROOT / "curator").rglob("*.py")):
        if "workspace" in path.relative_to(ROOT / "curator").parts[:1]:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if WORKSPACE_FILES.search(code) and "help=" not in code:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
