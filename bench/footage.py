"""The footage the benchmarks curate, built where you want it.

    python bench/footage.py OUT [--scenario A|B]

writes OUT/footage.mp4, OUT/footage.json and OUT/reference.png:

- footage.mp4: one person's clips played four times over, with other
  people's clips and a stage scene with several people between them,
  letterboxed to 640x360 at 25 fps (about three minutes). It has what hours
  of real footage have, in small: the same angles over and over, other
  people, a crowd;
- footage.json: its segments (clip, person, start and end frame);
- reference.png: a frame of that person from the end of their clip, which is
  held out of the footage, to name the target with `curator run --ref`.

Scenario A is the man of liveportrait/driving_d9 (large head turns), B the
man of two pc_avs interviews (224 px, sunglasses in one); bench/curate.py
measures both (docs/benchmarks.md). The shared clips are read from
../shared/testdata; the footage is built once into the benchmark cache and
copied here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import curate as scenarios  # noqa: E402

FILES = ("footage.mp4", "footage.json", "reference.png")


def build(out: Path, scenario: str = "A", cache: Path | None = None) -> dict:
    """Build (or reuse from the cache) scenario's footage and reference photo into the folder `out`."""
    from curator.models import faces

    common.require_testdata()
    out = out.resolve()
    if out.is_dir() and set(p.name for p in out.iterdir()) - set(FILES):
        sys.exit(f"bench/footage.py: {out} holds other files; give a new folder (only {', '.join(FILES)} are written)")
    out.mkdir(parents=True, exist_ok=True)
    info = scenarios.build_footage(scenario, Path(cache or common.default_cache()))
    shutil.copyfile(info["path"], out / "footage.mp4")
    (out / "footage.json").write_text(json.dumps({k: v for k, v in info.items() if k != "path"}, indent=1))
    sc = scenarios.SCENARIOS[scenario]
    reference = scenarios.save_reference(sc["ref_clip"], out / "reference.png", faces.load_models(str(common.PACK_SMALL)))
    return {"footage": str(out / "footage.mp4"), "frames": info["frames"], "seconds": info["frames"] / scenarios.SPEC.fps,
            "person": sc["what"], "reference": reference}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for footage.mp4, footage.json and reference.png")
    ap.add_argument("--scenario", choices=sorted(scenarios.SCENARIOS), default="A")
    ap.add_argument("--cache", type=Path, default=None, help="footage cache (default: CURATOR_BENCH_CACHE or ~/.cache/curator-bench)")
    args = ap.parse_args()
    made = build(args.out, args.scenario, args.cache)
    print(f"{made['footage']}: {made['seconds'] / 60:.1f} min, {made['person']}; reference photo {made['reference']['path']}")


if __name__ == "__main__":
    main()
