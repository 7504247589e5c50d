"""Media: footage in (finding, fingerprinting, sampling frames: `footage`), video out (`videoio`).

The lowest layer that knows about pictures; it knows nothing of faces.
`from curator import media` gives footage's functions (`media.discover`,
`media.sample_video`, ...); `curator.media.videoio` reads and writes whole
videos for convert.
"""

from .footage import (  # noqa: F401
    VIDEO_EXTS, IMAGE_EXTS, MediaError, Footage, media_kind, discover, sniff_kind, read_image, VideoInfo,
    SamplerState, ResumePoint, HeldBytes, SampleStats, PendingFrame, SampledFrame, open_video, video_info,
    av_reason, luma_thumb, luma_plane, change, frame_time, sample_video, Segment, Keyframe, segments,
    split_keyframes, seek_segment, frame_bytes, decode, HoldPlan, hold_plan, frame_bytes_estimate, to_bgr,
    display_rotation, rotate, prefetch, sha256_file,
)
