"""`curator verify` finds and repairs real inconsistencies in a real workspace."""

from __future__ import annotations

import json
import shutil

import numpy as np

from helpers import clip, curator, curator_json
from curator.workspace import open_workspace, read_embeddings, read_table, write_embeddings


def test_clean_workspace_verifies(tmp_path):
    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", check=True)
    out = curator_json("verify", "-w", ws)
    assert out["ok"] and out["problems"] == [] and out["rows"] > 0


def test_damage_found_and_repaired(tmp_path):
    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), clip("face_2.mp4"), "-w", ws, "-q", check=True)
    w = open_workspace(ws)
    table = read_table(w)
    gone = table["crop_path"].iloc[0]
    (ws / gone).unlink()
    orphan = ws / "crops" / "stray.jpg"
    shutil.copyfile(ws / table["crop_path"].iloc[1], orphan)
    emb = read_embeddings(w)
    write_embeddings(w, np.vstack([emb, emb[:2]]))  # as a crash between the two renames leaves it

    proc = curator("verify", "-w", ws, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    kinds = {p["kind"]: p for p in report["problems"]}
    assert set(kinds) == {"missing_crops", "orphan_crops"}
    assert kinds["missing_crops"]["examples"] == [gone]
    assert kinds["orphan_crops"]["examples"] == ["crops/stray.jpg"]
    assert [n["kind"] for n in report["notes"]] == ["embeddings_trailing"]

    fixed = curator_json("verify", "-w", ws, "--repair")
    assert fixed["ok"], fixed
    assert not orphan.exists()
    t = read_table(w)
    assert t["crop_missing"].sum() == 1 and t.loc[t["crop_missing"], "crop_path"].item() == gone
    assert sum(np.load(f).shape[0] for f in (ws / "embeddings").glob("*.npy")) == len(t)
    # Curate and export skip the face whose crop is gone.
    curator("curate", "-w", ws, "--budget", "1000", check=True)
    out = curator_json("export", "-w", ws, "--out", tmp_path / "out")
    m = __import__("pandas").read_parquet(tmp_path / "out" / "manifest.parquet")
    assert t.loc[t["crop_missing"], "face_id"].item() not in set(m["face_id"])
    assert out["faces"] == len(m)


def test_changed_model_file_reported(tmp_path):
    from helpers import PACK

    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", "--models", pack, check=True)
    with open(pack / "mobilefacenet_128.onnx", "ab") as f:
        f.write(b"\0")
    proc = curator("verify", "-w", ws, "--json")
    assert proc.returncode == 1
    (problem,) = json.loads(proc.stdout)["problems"]
    assert problem["kind"] == "changed_models" and problem["examples"] == ["mobilefacenet_128.onnx"]
    # And extract refuses to add embeddings from the changed model.
    again = curator("extract", clip("face_2.mp4"), "-w", ws, "-q", "--models", pack)
    assert again.returncode == 2 and "mobilefacenet_128.onnx" in again.stderr
