"""Video: every frame of a clip through the same load -> run -> render path as a photo.

    from runtime.api import Remover
    from runtime.render import RenderOptions
    from runtime.video import VideoOptions
    with Remover("u2netp.onnx") as remover:
        remover.video("clip.mp4", "clip.webm", RenderOptions(mode="cutout"))       # VP9 + alpha, sound kept
        for item in remover.video_frames("clip.mp4", VideoOptions(stop=50)):     # frames and masks
            ...

``formats`` (the output table, no PyAV needed), ``source`` (checks, decoding, orientation), ``smooth``
(temporal smoothing), ``sink`` (atomic writers, sound, completeness) and ``process`` (the threads).
PyAV (``pip install 'u2net-toolkit[video]'``) is imported only when a clip is opened.
"""

from __future__ import annotations

from runtime.video.formats import (
    FORMAT_CHOICES,
    VIDEO_FORMATS,
    VIDEO_SUFFIXES,
    VideoFormat,
    VideoOptions,
    choose,
    is_animated_gif,
    output_suffix,
)
from runtime.video.smooth import SETTINGS as SMOOTH_SETTINGS

__all__ = [
    "FORMAT_CHOICES", "SMOOTH_SETTINGS", "VIDEO_FORMATS", "VIDEO_SUFFIXES", "VideoFormat", "VideoOptions", "choose",
    "is_animated_gif", "is_video", "output_suffix",
]  # fmt: skip


def is_video(path: str) -> bool:
    """Whether a planned input goes the video way: a video container's suffix, or a GIF with several frames."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    return suffix in VIDEO_SUFFIXES or (suffix == ".gif" and is_animated_gif(path))
