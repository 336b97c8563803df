"""MP4 files with PyAV: H.264 in yuv420p, what ordinary players (browsers, VLC, QuickTime) read.

H.264 in yuv420p needs even width and height; frames are padded by one pixel when odd."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_mp4(path, frames, fps: float, crf: int = 23) -> dict:
    """frames: iterable of RGB uint8 (H, W, 3), all one size. Returns {"path", "frames",
    "width", "height", "fps"} as written."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, size = 0, None
    # A rational rate keeps frame timestamps exact (20 fps -> 1/20 s per frame).
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            img = _even(np.ascontiguousarray(img, dtype=np.uint8))
            if size is None:
                size = img.shape[:2]
                stream.height, stream.width = size
            elif img.shape[:2] != size:
                raise ValueError(f"frame {n} is {img.shape[:2]}, the video is {size}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
            n += 1
        if n == 0:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():          # flush the encoder's delayed frames
            container.mux(packet)
    return {"path": str(path), "frames": n, "height": int(size[0]), "width": int(size[1]),
            "fps": float(rate)}


def read_mp4(path) -> tuple[np.ndarray, dict]:
    """Decode every frame: (N, H, W, 3) RGB uint8, and the stream's codec, pixel format, rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "fps": float(stream.average_rate) if stream.average_rate else None}
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8), info


def _even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return img
