"""The workspace format (docs/workspace.md): shards, column groups, the format-1 upgrade, on real extractions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import PACK, clip, curator, curator_json, table_files
from curator import api, workspace
from curator.workspace import (FORMAT_VERSION, RowArray, open_workspace, read_embeddings, read_meta, read_table,
                               read_vectors, shards)

pytestmark = pytest.mark.slow  # real workspaces, training or clusters: not in the daily tier (-m 'not slow')

CURATE_COLUMNS = ["face_id", "quality", "dup_group", "pose_cluster", "expr_cluster", "light_cluster", "selected", "reason",
                  "for_target", "target_faces"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    """Two clips extracted in two runs (two commits), identified and curated."""
    ws = tmp_path_factory.mktemp("curated") / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", check=True)
    curator("extract", clip("driving_d6.mp4"), "-w", ws, "-q", check=True)
    curator("identify", "-w", ws, "--cluster", "0", check=True)
    curator("curate", "-w", ws, "--budget", "12", check=True)
    return ws


def test_each_commit_is_a_new_shard_and_stages_write_only_their_group(tmp_path):
    ws = tmp_path / "ws"
    curator("extract", clip("face_1.mp4"), "-w", ws, "-q", check=True)
    first = table_files(ws)
    assert sorted(first) == ["embeddings/000000.npy", "faces/000000.parquet"]
    curator("extract", clip("driving_d6.mp4"), "-w", ws, "-q", check=True)
    second = table_files(ws)
    assert sorted(second) == ["embeddings/000000.npy", "embeddings/000001.npy", "faces/000000.parquet",
                              "faces/000001.parquet"]
    assert all(second[name] == data for name, data in first.items())  # extract never rewrites a shard
    curator("identify", "-w", ws, "--cluster", "0", check=True)
    curator("curate", "-w", ws, "--budget", "10", check=True)
    after = table_files(ws)
    assert sorted(set(after) - set(second)) == ["columns/curate.parquet", "columns/identify.parquet"]
    assert all(after[name] == data for name, data in second.items())  # stages leave the shards alone
    w = open_workspace(ws)
    groups = {name: pq.read_schema(ws / "columns" / f"{name}.parquet").names for name in ("identify", "curate")}
    assert groups == {"identify": ["face_id", "identity_cluster", "identity_score", "track_id", "is_target"],
                      "curate": CURATE_COLUMNS}
    table = read_table(w)
    assert len(table) == sum(s.rows for s in shards(w)) == read_meta(w)["rows"]
    assert (pq.read_table(ws / "columns" / "curate.parquet").column("face_id").to_pylist() == table["face_id"].tolist())
    # Only the columns asked for are read, from the shards and groups that hold them.
    narrow = read_table(w, ["face_id", "selected", "yaw"])
    assert list(narrow.columns) == ["face_id", "selected", "yaw"]
    pd.testing.assert_frame_equal(narrow, table[["face_id", "selected", "yaw"]])


def test_rows_added_after_a_stage_read_as_null_in_its_columns(curated, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(curated, ws)
    before = read_table(open_workspace(ws))
    curator("extract", clip("face_2.mp4"), "-w", ws, "-q", check=True)
    after = read_table(open_workspace(ws))
    assert len(after) > len(before)
    # (integer columns read as floats once nulls follow them, as they did in format 1)
    pd.testing.assert_frame_equal(after.iloc[: len(before)][CURATE_COLUMNS], before[CURATE_COLUMNS], check_dtype=False)
    new = after.iloc[len(before):]
    assert new["selected"].isna().all() and new["dup_group"].isna().all() and new["is_target"].isna().all()
    curator("curate", "-w", ws, "--budget", "12", check=True)  # curate runs on it, new rows counted as not target
    t = read_table(open_workspace(ws))
    assert t["reason"].notna().all() and (t.iloc[len(before):]["reason"] == "not the target identity").all()


def test_embeddings_across_shards_index_like_one_array(curated):
    w = open_workspace(curated)
    emb = read_embeddings(w)
    assert isinstance(emb, RowArray) and len(emb) == len(read_table(w, ["face_id"]))
    whole = np.asarray(emb)
    parts = [np.load(s.embeddings)[: s.rows] for s in shards(w)]
    np.testing.assert_array_equal(whole, np.vstack(parts))
    rng = np.random.default_rng(0)
    rows = rng.choice(len(emb), 20, replace=False)
    np.testing.assert_array_equal(emb[rows], whole[rows])
    np.testing.assert_array_equal(emb[3:len(emb) - 2], whole[3:len(emb) - 2])
    np.testing.assert_array_equal(emb[-1], whole[-1])
    np.testing.assert_array_equal(emb[whole[:, 0] > 0], whole[whole[:, 0] > 0])
    np.testing.assert_allclose(emb @ whole[0], whole @ whole[0], rtol=1e-6)
    app = read_vectors(w, "appearance")
    table = read_table(w, ["appearance"])
    np.testing.assert_allclose(app[rows], np.stack(table["appearance"].to_numpy()[rows]).astype(np.float32))


def test_small_shards_give_the_same_table_and_curation(curated, tmp_path, monkeypatch):
    """Extract with shards of 7 rows: many shards per commit; the table, embeddings, curation and export are the
    ones of the one-shard-per-commit workspace."""
    monkeypatch.setattr(workspace.meta, "SHARD_ROWS", 7)  # the one constant both writers read (curator.workspace.meta)
    ws = tmp_path / "ws"
    api.extract(clip("face_1.mp4"), ws, models=str(PACK))
    api.extract(clip("driving_d6.mp4"), ws, models=str(PACK))
    w, ref = open_workspace(ws), open_workspace(curated)
    assert len(shards(w)) > 4 and all(s.rows <= 7 for s in shards(w))
    api.identify(ws, cluster=0)
    api.curate(ws, budget=12)
    many, one = read_table(w), read_table(ref)
    assert list(many["face_id"]) == list(one["face_id"])
    for c in ["yaw", "pitch", "is_target", "track_id", *CURATE_COLUMNS]:
        pd.testing.assert_series_equal(many[c], one[c], check_exact=False, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(read_embeddings(w)), np.asarray(read_embeddings(ref)), atol=1e-5)
    out = api.export(ws, tmp_path / "out")
    assert out["faces"] == int(one["selected"].sum())
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    exported = np.load(tmp_path / "out" / "embeddings.npy")
    rows = one.reset_index().set_index("face_id").loc[manifest["face_id"], "index"].to_numpy()
    np.testing.assert_allclose(exported, np.asarray(read_embeddings(ref))[rows], atol=1e-5)


def make_format_1(ws: Path) -> pd.DataFrame:
    """Lay a workspace out as curator wrote format 1: faces.parquet (every column, stages' included),
    embeddings.npy, workspace.json with format_version 1 and embeddings.file. Returns the table."""
    w = open_workspace(ws)
    table, emb = read_table(w), np.asarray(read_embeddings(w))
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), ws / "faces.parquet", compression="zstd")
    np.save(ws / "embeddings.npy", np.vstack([emb, emb[:1]]))  # a trailing row, as a crash could leave in format 1
    for folder in ("faces", "embeddings", "columns"):
        shutil.rmtree(ws / folder)
    meta = json.loads((ws / "workspace.json").read_text())
    meta["format_version"] = 1
    meta["embeddings"] = {"file": "embeddings.npy", "dim": meta["embeddings"]["dim"], "dtype": "float32"}
    (ws / "workspace.json").write_text(json.dumps(meta))
    return table


def test_format_1_is_read_as_is_and_upgraded_by_the_first_writer(curated, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(curated, ws)
    emb_before = np.asarray(read_embeddings(open_workspace(ws)))
    v1 = make_format_1(ws)
    w = open_workspace(ws)
    # Readers read format 1 without changing it.
    pd.testing.assert_frame_equal(read_table(w), v1)
    np.testing.assert_array_equal(np.asarray(read_embeddings(w)), emb_before)
    report = curator_json("verify", "-w", ws)
    assert report["ok"] and "old_format" in [n["kind"] for n in report["notes"]]
    audit = curator_json("audit", "-w", ws, "--out", tmp_path / "a.html")
    assert audit["target_faces"] == int(v1["is_target"].sum())
    assert (ws / "faces.parquet").exists() and read_meta(w)["format_version"] == 1
    # The first command that takes the lock upgrades it: format-2 files, same table, same embeddings.
    curator("curate", "-w", ws, "--budget", "12", check=True)
    meta = read_meta(w)
    assert meta["format_version"] == FORMAT_VERSION == 2 and "file" not in meta["embeddings"]
    assert not (ws / "faces.parquet").exists() and not (ws / "embeddings.npy").exists()
    assert sorted(table_files(ws)) == ["columns/curate.parquet", "columns/identify.parquet", "embeddings/000000.npy",
                                       "faces/000000.parquet"]
    pd.testing.assert_frame_equal(read_table(w), v1)  # same selection: curate ran again with the same budget
    np.testing.assert_array_equal(np.asarray(read_embeddings(w)), emb_before)
    assert curator_json("verify", "-w", ws)["ok"]


def test_upgrade_survives_a_crash_at_any_step(curated, tmp_path):
    """A crash before the upgrade's last step (the format_version) leaves format 1 in charge, with stray
    format-2 files that the next upgrade replaces; a crash after it leaves format-1 files the next writer removes."""
    ws = tmp_path / "ws"
    shutil.copytree(curated, ws)
    v1 = make_format_1(ws)
    # Crash mid-upgrade: part of the format-2 files written (a stray shard from elsewhere among them).
    (ws / "faces").mkdir()
    shutil.copyfile(curated / "faces" / "000001.parquet", ws / "faces" / "000000.parquet")
    shutil.copyfile(curated / "faces" / "000001.parquet", ws / "faces" / "000005.parquet")
    w = open_workspace(ws)
    pd.testing.assert_frame_equal(read_table(w), v1)  # still format 1 for readers
    fixed = curator_json("verify", "-w", ws, "--repair")
    assert fixed["ok"] and fixed["repaired"][0] == "upgraded the workspace from format 1 to 2"
    assert sorted(p.name for p in (ws / "faces").iterdir()) == ["000000.parquet"]
    pd.testing.assert_frame_equal(read_table(w), v1)
    # Crash after the format_version: the format-1 files are still there; readers ignore them, a writer removes them.
    shutil.copyfile(ws / "faces" / "000000.parquet", ws / "faces.parquet")
    pd.testing.assert_frame_equal(read_table(w), v1)
    curator("identify", "-w", ws, "--cluster", "0", check=True)
    assert not (ws / "faces.parquet").exists()
    pd.testing.assert_frame_equal(read_table(w)[["face_id", "is_target"]], v1[["face_id", "is_target"]])


def test_read_columns_gives_read_tables_values_for_all_rows_or_a_few(curated, tmp_path):
    """`read_columns` (review at 10M rows: each group file read once) against `read_table`, with groups shorter
    than the table (rows extracted after the stages) and a group written over a shard's column."""
    ws = tmp_path / "ws"
    shutil.copytree(curated, ws)
    w = open_workspace(ws)
    t = read_table(w, ["face_id", "sharpness"])
    workspace.update_columns(w, pd.DataFrame({"face_id": t["face_id"], "sharpness": t["sharpness"] * 2}))  # -> other
    curator("extract", clip("face_2.mp4"), "-w", ws, "-q", check=True)
    w = open_workspace(ws)
    columns = ["face_id", "sharpness", "yaw", "selected", "dup_group", "is_target", "quality", "absent"]
    whole = read_table(w, columns)
    assert len(whole) > len(t) and whole["sharpness"].iloc[0] == 2 * t["sharpness"].iloc[0]
    assert whole["selected"].iloc[len(t):].isna().all()  # past the groups' end
    got = workspace.read_columns(w, columns)
    assert got.column_names == [c for c in columns if c != "absent"]
    pd.testing.assert_frame_equal(got.to_pandas(), whole[got.column_names], check_dtype=False)
    rows = np.array([0, 3, len(t) - 1, len(t), len(whole) - 1])
    few = workspace.read_columns(w, columns, rows=rows).to_pandas()
    pd.testing.assert_frame_equal(few, whole[got.column_names].iloc[rows].reset_index(drop=True), check_dtype=False)
