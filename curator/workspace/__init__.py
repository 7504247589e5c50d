"""The workspace: a folder that every stage reads and writes.

This module owns the workspace format; no other module reads or writes the
files below except through it. Layout, format 2 (the contract is
docs/workspace.md):

    WS/workspace.json            format version, models, settings, sources, consent
    WS/faces/000000.parquet      a shard: rows of one extract commit (extract's columns), at most SHARD_ROWS
    WS/embeddings/000000.npy     float32 [rows, dim] of that shard; row i belongs to the shard's row i
    WS/columns/<group>.parquet   face_id + the columns a later stage writes (identify, curate, review,
                                 verify, other), for the table's first rows in order
    WS/crops/                    aligned face crops, paths in the `crop_path` column
    WS/staging/                  extract's checkpoints not yet merged into the table
    WS/.lock                     held by the one command that may write

The table is the shards in order, each joined column-wise with the column
groups; a group shorter than the table (rows extract added since that stage
ran) reads as null beyond its end. Format 1 (faces.parquet + embeddings.npy)
is read as one shard holding every column, and upgraded in place by the
first command that takes the lock (`upgrade`).

Invariants that make crashes harmless:
- every file is only replaced by an atomic rename; a shard's embeddings are
  renamed into place before its rows, so a shard's embeddings are never
  shorter than its rows, whatever a crash interrupted;
- stages add or change columns but never reorder or drop rows; extract only
  adds new shards, it never rewrites one;
- extract's staged parts carry deterministic face ids, so merging them twice
  adds nothing the second time.

The package is this contract: no other module reads or writes the files above
except through it. Its modules, one per section, bottom to top: `meta` (the
folder, its names, workspace.json), `table` (reading shards, column groups and
embeddings; the two file writers), `write` (the table's writers), `upgrade`
(format 1 -> 2), `lock` (one writer), `crops` (face ids, crop files,
identity sheets), `staging` (extract's checkpoints and the merge), `verify`
(checks and repairs). Everything public is re-exported here:
`from curator.workspace import open_workspace, read_table`.
"""

from .meta import (  # noqa: F401
    FORMAT_NAME, FORMAT_VERSION, META, FACES, EMBEDDINGS, COLUMNS, CROPS, STAGING, LOCK, LEGACY_TABLE,
    LEGACY_EMBEDDINGS, SHARD_ROWS, COLUMN_GROUPS, GROUP_OF, OTHER_GROUP, WorkspaceError, WorkspaceLocked, now,
    Workspace, new_meta, open_workspace, read_meta, write_meta, inputs_of, FIFTYONE_RESERVED, fiftyone_field_name,
)
from .lock import (  # noqa: F401
    locked, remove_half_written,
)
from .table import (  # noqa: F401
    Shard, format_version, shards, table_rows, column_groups, table_columns, read_arrow, read_table, iter_table,
    read_columns,
    RowArray, read_embeddings, list_matrix, read_vectors, write_parquet, write_npy,
)
from .write import (  # noqa: F401
    ensure_current, write_table, write_embeddings, trim_embeddings, update_columns,
)
from .upgrade import (  # noqa: F401
    upgrade, remove_leftovers,
)
from .crops import (  # noqa: F401
    face_id, crop_path, write_crop, source_sha256, IDENTITIES, crop_file, read_crop, identity_sheet, report_path,
    is_workspace,
)
from .staging import (  # noqa: F401
    PART_META_KEY, UNIT_FIELDS, unit_key, unit_source, PartWriter, write_part, part_progress, staged_units,
    further, staged_progress, progress_by_source, source_progress, staged_parts, commit_staging, source_counts,
    store_parts, append_rows, staged_rows, staged_crops,
)
