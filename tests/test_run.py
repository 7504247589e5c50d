"""`curator run` as one job: its inputs are checked before a frame is decoded, and it holds the workspace's lock
from extract to export, so no other writer gets in between its stages."""

from __future__ import annotations

import pytest

from curator import api
from curator.errors import CuratorError
from curator.fs.lock import holder
from helpers import IMAGES, PACK, clip, curator, loop_video, one_line_error


def test_a_second_writer_between_the_stages_of_one_run_is_refused(tmp_path):
    ws, out = tmp_path / "ws", tmp_path / "set"
    seen = []

    def between(stage: str, summary: dict) -> None:
        # A real second writer, started as a user would while the run goes on.
        proc = curator("curate", "-w", ws, "--budget", "5")
        seen.append((stage, holder(ws / ".lock").get("command"), proc))

    api.run([clip("face_1.mp4")], out, workspace=ws, budget=5, fps=1, models=str(PACK), on_stage=between)
    assert [s for s, _, _ in seen] == ["extract", "identify", "curate", "export"]
    for stage, command, proc in seen:
        assert command == "curator run", (stage, command)  # one holder all along, never released in between
        one_line_error(proc, "in use by `curator run`")
    assert holder(ws / ".lock") == {}  # released at the end
    assert (out / "manifest.csv").is_file()


@pytest.mark.parametrize("bad, why", [("text", "not a decodable image"), ("dogs", "no face found"),
                                      ("crowd", "faces found")])
def test_a_bad_reference_is_refused_before_any_frame_is_decoded(tmp_path, bad, why):
    ref = {"text": tmp_path / "notes.jpg", "dogs": IMAGES / "dlib" / "dogs.jpg",
           "crowd": IMAGES / "dlib" / "bald_guys.jpg"}[bad]
    if bad == "text":
        ref.write_text("not a photo")
    footage = tmp_path / "long.mp4"
    loop_video(clip("face_1.mp4"), footage, 20)  # long enough that a late check would show
    ws = tmp_path / "ws"
    proc = curator("run", footage, "--ref", ref, "--out", tmp_path / "set", "-w", ws, "-q")
    one_line_error(proc, str(ref), why)
    # Nothing was extracted: no workspace table, no crops, no export.
    assert not (ws / "faces").exists() and not (ws / "crops").exists()
    assert not (tmp_path / "set").exists()


def test_an_unusable_model_pack_is_refused_before_any_frame_is_decoded(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "det.onnx").write_bytes(b"not a model")
    with pytest.raises(CuratorError):
        api.run([clip("face_1.mp4")], tmp_path / "set", ref=[IMAGES / "face_recognition" / "examples" / "obama_small.jpg"], models=str(pack),
                workspace=tmp_path / "ws")
    assert not (tmp_path / "ws" / "faces").exists() and not (tmp_path / "ws" / "crops").exists()
