"""`curator extract`: footage in, one table row per face out.

    footage -> sampled frames -> detect (5 keypoints) -> align -> crop
            -> identity embedding, head pose, expression, lighting, quality
            -> staged parts -> merged as new shards: faces/NNNNNN.parquet + embeddings/NNNNNN.npy

Work is checkpointed in `staging/` every few hundred analysed frames, each
part naming how far into which unit of work it got, so a killed run resumes
inside a long video instead of starting it over. Face ids are deterministic
(source hash, frame, face number), which makes the final merge idempotent.

A unit of work is a video segment (`curator.media.segments`: a video longer than
`segment_seconds` is split at keyframes, and each segment is sampled on its
own) or a run of photos. The local engine works through a file's segments in
order in this process; `engine="ray"` hands one unit to each Ray task
(`curator.extract.ray`). Both run `run_unit` on the same units, so they
give the same table.

Modules, bottom to top: `settings` (options and what a workspace fixes), `frame`
(one frame's faces: detect, align, describe, crop), `units` (a video segment or
a run of photos, and the threads that run it), `ray` (units as Ray tasks),
`driver` (`extract`: plan, run the units here or on Ray, commit).
"""

from .driver import extract  # noqa: F401
from .settings import ExtractSettings, ExtractSummary, extract_settings  # noqa: F401
