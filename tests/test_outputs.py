"""Nothing the user owns is ever lost: every output rule of curator/outputs.py (docs/security.md), per command.

The project folder of these tests is what a new user has: `proj/footage/` (a clip and a photo),
`proj/pack/` (a copy of the model pack), a workspace `proj/ws` extracted from that footage with that
pack, and an earlier export `proj/set`. Each test tries a command whose output would destroy or mix
with one of them; the command must refuse with one line naming the path and why, and every file
must still be there, byte for byte. An output may replace only an earlier output of the same command.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers import IMAGES, PACK, clip, curator, one_line_error

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its SHA-256: what must survive a refused command."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    proj = tmp_path_factory.mktemp("outputs") / "proj"
    (proj / "footage").mkdir(parents=True)
    shutil.copy(clip("face_1.mp4"), proj / "footage" / "interview.mp4")
    shutil.copy(IMAGES / "face_recognition" / "examples" / "obama-480p.jpg", proj / "footage" / "photo.jpg")
    shutil.copytree(PACK, proj / "pack")
    curator("extract", proj / "footage", "-w", proj / "ws", "--models", proj / "pack", "--fps", "1", "-q", check=True)
    curator("curate", "-w", proj / "ws", "--budget", "4", check=True)
    curator("export", "-w", proj / "ws", "--out", proj / "set", check=True)
    return proj


@pytest.fixture
def intact(project):
    """Asserts after the test that nothing in the project changed."""
    before = snapshot(project)
    yield project
    assert snapshot(project) == before


# --- export ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target, words", [
    ("ws", ["is the workspace"]),
    (".", ["contains the workspace"]),
    ("footage", ["contains input footage"]),
    ("footage/interview.mp4", ["is input footage"]),
    ("pack", ["is the workspace's model pack"]),
    ("ws/exported", ["is inside the workspace"]),
])
def test_export_never_replaces_the_workspace_its_footage_or_its_models(intact, target, words):
    out = intact / target
    one_line_error(curator("export", "-w", intact / "ws", "--out", out, "--force"), str(out.resolve()), *words)


def test_export_force_refuses_a_folder_it_did_not_write(intact, tmp_path):
    mine = tmp_path / "holiday"
    mine.mkdir()
    (mine / "beach.jpg").write_bytes(b"not curator's")
    one_line_error(curator("export", "-w", intact / "ws", "--out", mine, "--force"), str(mine), "not written by")
    assert (mine / "beach.jpg").read_bytes() == b"not curator's"


def test_export_force_replaces_its_own_earlier_export_but_not_one_with_files_added(project):
    out = project.parent / "again"
    curator("export", "-w", project / "ws", "--out", out, check=True)
    first = json.loads((out / ".curator-output.json").read_text())
    assert first["command"] == "export" and "manifest.parquet" in first["files"]
    curator("export", "-w", project / "ws", "--out", out, "--all", "--force", check=True)  # its own: replaced
    assert len(json.loads((out / "provenance.json").read_text())["sources"]) == 2
    (out / "faces" / "my_notes.txt").write_text("mine")
    one_line_error(curator("export", "-w", project / "ws", "--out", out, "--force"), "faces/my_notes.txt",
                   "did not write")
    assert (out / "faces" / "my_notes.txt").read_text() == "mine"


def test_export_to_a_file_is_refused_even_with_force(intact):
    video = intact / "footage" / "interview.mp4"
    one_line_error(curator("export", "-w", intact / "ws", "--out", video, "--force"), "interview.mp4")


# --- run --------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["footage", "-w", "ws2", "--out", "footage"], ["is input footage"]),            # the example
    (["footage/interview.mp4", "-w", "../ws2", "--out", "."], ["contains input footage"]),
    (["footage", "-w", "ws2", "--out", "footage/set"], ["inside the footage folder"]),
    (["footage", "-w", "ws2", "--out", "pack", "--models", "pack"], ["is the model pack"]),
    (["footage", "-w", "set", "--out", "set"], ["is the workspace"]),
    (["footage", "-w", "ws2", "--out", "ws"], ["not written by `curator export`"]),
])
def test_run_refuses_before_reading_anything(intact, args, words):
    one_line_error(curator("run", *[_in(intact, a) for a in args], "--force"), *words)
    assert not (intact / "ws2").exists() and not (intact.parent / "ws2").exists()  # nothing was extracted


def _in(proj: Path, arg: str) -> str:
    return arg if arg.startswith("-") else str(proj / arg)


# --- convert ------------------------------------------------------------------------------

def test_convert_outputs_never_replace_the_input_the_run_or_its_exports(intact, tiny_run):
    video = intact / "footage" / "interview.mp4"
    exports = tiny_run.parent  # holds A/ and B/, the exports the run learned from
    def convert(*args):
        return curator("convert", video, "--model", tiny_run, *args, "--force", "--max-frames", "3", "-q")

    one_line_error(convert("--out", video), str(video), "is the input video")
    one_line_error(convert("--frames-out", tiny_run), str(tiny_run), "is the model run folder")
    one_line_error(convert("--frames-out", exports / "A"), str(exports / "A"), "is identity A's export")
    one_line_error(convert("--frames-out", exports), str(exports), "contains the model run folder")
    one_line_error(convert("--out", intact, "--preview", "2"), str(intact), "contains the input video")
    one_line_error(convert("--out", intact / "set", "--preview", "2"), "is the output of `curator export`")
    other = intact / "footage" / "other.mp4"
    try:
        shutil.copy(video, other)  # a video of the user's, no sidecar: not curator's
        one_line_error(convert("--out", other), str(other), "not written by `curator convert`")
        assert other.read_bytes() == video.read_bytes()
    finally:
        other.unlink()


def test_convert_replaces_only_its_own_earlier_outputs(tiny_run, tmp_path):
    video = clip("face_1.mp4")
    def convert(*args, check=False):
        return curator("convert", video, "--model", tiny_run, *args, "--max-frames", "3", "-q", check=check)

    out = tmp_path / "swapped.mp4"
    convert("--out", out, check=True)
    first = out.read_bytes()
    assert convert("--out", out).returncode == 2  # exists: only with --force
    convert("--out", out, "--crf", "30", "--force", check=True)
    assert out.read_bytes() != first  # the earlier, labelled output was replaced
    frames = tmp_path / "frames"
    convert("--frames-out", frames, check=True)
    assert json.loads((frames / ".curator-output.json").read_text())["command"] == "convert --frames-out"
    convert("--frames-out", frames, "--force", check=True)
    one_line_error(convert("--out", frames, "--preview", "1", "--force"), "is the output of `curator convert --frames-out`")


# --- train --------------------------------------------------------------------------------

@pytest.mark.parametrize("target, words", [
    ("set", ["is identity", "'s export"]),  # --a and --b name the same export here
    (".", ["contains identity", "'s export"]),
    ("footage", ["is not a training run folder"]),
    ("ws", ["is not a training run folder"]),
])
def test_train_never_writes_into_its_exports_or_a_folder_of_other_files(intact, target, words):
    proc = curator("train", "--a", intact / "set", "--b", intact / "set", "--out", intact / target, "--steps", "1")
    one_line_error(proc, str((intact / target).resolve()), *words)


def test_other_commands_never_replace_a_run_folder(intact, tiny_run):
    one_line_error(curator("export", "-w", intact / "ws", "--out", tiny_run, "--force"), "is the output of `curator train`")
    assert (tiny_run / "model.safetensors").is_file()


# --- extract ------------------------------------------------------------------------------

def test_extract_never_makes_a_workspace_of_a_folder_holding_other_things(intact):
    one_line_error(curator("extract", intact / "footage" / "photo.jpg", "-w", intact / "footage", "-q"),
                   str((intact / "footage").resolve()), "not a curator workspace")
    assert not (intact / "footage" / "workspace.json").exists()


# --- audit and compare ---------------------------------------------------------------------

@pytest.mark.parametrize("target, words", [
    ("footage/interview.mp4", ["is input footage"]),
    ("ws", ["is the workspace", "report"]),
    ("pack", ["is the workspace's model pack"]),
    ("pack/det_500m.onnx", ["not written by `curator audit`"]),
])
def test_audit_report_never_replaces_footage_workspace_or_models(intact, target, words):
    one_line_error(curator("audit", "-w", intact / "ws", "--out", intact / target), "cannot write the report", *words)


def test_reports_replace_only_their_own_kind(project, tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><title>my page</title>")
    one_line_error(curator("audit", "-w", project / "ws", "--out", page), "not written by `curator audit`")
    assert page.read_text() == "<!doctype html><title>my page</title>"
    report = tmp_path / "report.html"
    curator("audit", "-w", project / "ws", "--out", report, check=True)
    curator("audit", "-w", project / "ws", "--out", report, "--selected", check=True)  # its own: replaced
    one_line_error(curator("compare", project / "ws", project / "ws", "--out", report), "not written by `curator compare`")
    assert "<title>curator audit" in report.read_text()
