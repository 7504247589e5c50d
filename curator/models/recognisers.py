"""What a cosine similarity means for each recogniser, and which recogniser a workspace or a model pack uses.

Identity embeddings are L2-normalised, so two faces' similarity is their dot
product; but the same number means different things to different
recognisers (a 128-d MobileFaceNet spreads one person's faces wider than a
512-d ResNet-50 does). Three decisions read one:

- `same_person`: `identify` counts a face as the reference's person, or a
  track as the target, at or above it;
- `track_link`: `identify.link_tracks` (and `convert`, following its face
  through profiles) lets a face continue the previous frame's track only if
  the two are at least this alike, so a track does not chain across a cut
  into the next person framed the same way;
- `same_picture`: `curate` treats two faces at or above it (and within a
  few degrees of pose) as the same picture, and takes the second only if the
  budget needs it.

`TABLE` has them per recogniser model file, with where each number comes
from (docs/curation.md prints the same table). A workspace's recogniser is
the one its workspace.json `models` record names (file names with their
SHA-256); embeddings from another recogniser cannot be compared with its
own, so `check_same` refuses a pack whose recogniser differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CuratorError

if TYPE_CHECKING:  # the table is read by pure stages (curate) that load no models
    from .faces import FaceModels


@dataclass(frozen=True)
class Recogniser:
    file: str            # the model file's name in its pack
    same_person: float
    track_link: float
    same_picture: float
    sha256: str | None = None  # the file the numbers were measured or published for
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # number -> where it comes from


MOBILEFACENET_128 = Recogniser(
    "mobilefacenet_128.onnx", same_person=0.45, track_link=0.3, same_picture=0.95,
    sha256="0c9ad2a83969fc82155706f7020e6926b4a1a90a5476fff4a5588dfe207f64a4",
    sources={
        "same_person": "measured: the shared labelled photos (../shared/testdata/images, 32 faces detected, 67 "
                       "same-person and 429 different-person pairs): every same-person pair >= 0.54, 99.5% of "
                       "different-person pairs < 0.45; tests/test_curate.py::"
                       "test_identity_threshold_calibration_on_labelled_photos re-checks it",
        "track_link": "measured: bench/curate.py on the shared clips: 99% of one person's consecutive analysed "
                      "faces >= 0.65, different people 0.22-0.30 at the 95th percentile",
        "same_picture": "measured: bench/curate.py on the shared clips: frames 40 ms apart reach 0.95 64-77% of the "
                        "time, faces of one clip 2 s or more apart 0-0.4%",
    })

W600K_R50 = Recogniser(
    "w600k_r50.onnx", same_person=0.35, track_link=0.2, same_picture=0.95,
    sha256="4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
    sources={
        "same_person": "published, then a stricter choice (not measured here: buffalo_l cannot be downloaded "
                       "offline): InsightFace's own recognition demo for this file (deepinsight/insightface, "
                       "web-demos/src_recognition/main.py at f8aa2c1) says 'NOT the same person' "
                       "below 0.2, 'LIKELY' from 0.2 and 'the same person' from 0.28; 0.35 is stricter, since a "
                       "bystander in a training set costs more than a missed frame (tracks bring profiles back). "
                       "Published accuracy: TAR 97.25% at FAR 1e-4 on IJB-C, 99.83% on LFW (InsightFace "
                       "model_zoo/README.md, buffalo_l); no threshold is published with it. Check on labelled "
                       "photos of your people",
        "track_link": "published boundary, our choice to use it: below 0.2 InsightFace's demo above says 'NOT the "
                      "same person'; a link also needs the boxes to overlap (IoU >= 0.3) within 2 s. Not measured "
                      "here",
        "same_picture": "assumption: the shared recogniser's 0.95, not measured for this file. A stronger "
                        "recogniser scores two moments of one person higher, so it may defer more; "
                        "bench/curate.py's table of pair similarities measures it on your footage",
    })

DEFAULT = Recogniser(
    "(any other recogniser)", same_person=0.45, track_link=0.3, same_picture=0.95,
    sources={name: "assumption: the shared recogniser's value; pass --threshold for identify, and measure with "
                   "bench/curate.py" for name in ("same_person", "track_link", "same_picture")})

TABLE = {r.file: r for r in (MOBILEFACENET_128, W600K_R50)}


class RecogniserMismatch(CuratorError):
    """A model pack whose recogniser is not the one a workspace's embeddings come from."""


def for_file(name: str | None) -> Recogniser:
    """The table's row for a recogniser model file name, or DEFAULT."""
    return TABLE.get(Path(name).name if name else "", DEFAULT)


def recorded_files(meta: dict) -> dict[str, str]:
    """The model files (name -> SHA-256) workspace.json records."""
    return dict(((meta or {}).get("models") or {}).get("files") or {})


def of_workspace(meta: dict) -> Recogniser:
    """The recogniser a workspace's embeddings come from (by workspace.json's models record)."""
    for name in recorded_files(meta):
        if name in TABLE:
            return TABLE[name]
    return DEFAULT


def loaded_file(fm: FaceModels) -> tuple[str, str | None]:
    """(file name, SHA-256) of a loaded pack's recogniser."""
    name = Path(getattr(fm.recognizer, "model_file", "") or "").name
    return name, fm.files.get(name)


def of_models(fm: FaceModels) -> Recogniser:
    """The table's row for a loaded pack's recogniser."""
    return for_file(loaded_file(fm)[0])


def check_same(meta: dict, fm: FaceModels) -> None:
    """Refuse a loaded pack whose recogniser is not the one the workspace's embeddings come from.

    The same file (by SHA-256) is the same recogniser whatever the pack; any
    other file, even of the same embedding size, gives similarities that mean
    nothing against the workspace's embeddings.
    """
    recorded = recorded_files(meta)
    if not recorded:
        return
    name, sha = loaded_file(fm)
    if sha is not None and sha in recorded.values():
        return
    path = ((meta.get("models") or {}).get("path")) or "the pack it was extracted with"
    raise RecogniserMismatch(
        f"model pack {fm.pack}: its recogniser {_describe(name, sha)} is not the one this workspace's embeddings "
        f"come from ({_describe_recorded(recorded, name)}); scores against them would mean nothing. "
        f"Use the workspace's pack: --models {path}")


def _describe(name: str, sha: str | None) -> str:
    return f"{name or '?'} (sha256 {sha[:12]})" if sha else (name or "?")


def _describe_recorded(recorded: dict[str, str], name: str) -> str:
    """The workspace's recogniser in words: the recorded file of the same name, else a known one, else its pack's files."""
    if name in recorded:
        return _describe(name, recorded[name])
    known = [f for f in recorded if f in TABLE]
    if known:
        return _describe(known[0], recorded[known[0]])
    return "one of " + ", ".join(_describe(f, s) for f, s in sorted(recorded.items()))
