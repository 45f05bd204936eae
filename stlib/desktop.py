"""The desktop app (``python -m stlib webcam``): a local camera stylised live in an OpenCV window.

J. Johnson, A. Alahi, L. Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
ECCV 2016: one forward pass of a trained network stylises a frame. The app reads the camera with
`stlib.video.CameraReader` (a thread keeps only the newest frame, so a slow network drops frames instead of
adding lag), runs `stlib.video.process_frame` (mirror, stylise, blend) and shows the result with its frame rate.
It needs OpenCV with windows (``opencv-python``, not the headless build); notebooks and Colab use the widget,
`stlib.webcam.WebcamStylizer`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from PIL import Image

from .video import CameraError, CameraReader, fit_frame, parse_resolution, process_frame

if TYPE_CHECKING:
    from .backends import Backend
    from .transformer import TransformerNet

__all__ = ["run_desktop"]


def run_desktop(
    model: TransformerNet | Backend,
    camera: int = 0,
    resolution: str | tuple[int, int] = "640x480",
    mirror: bool = True,
    strength: float = 1.0,
    max_frames: int | None = None,
) -> dict[str, float]:
    """Stylise a local camera in an OpenCV window (q/Esc quit, m mirror, s snapshot, +/- strength); return stats."""
    try:
        import cv2
    except ImportError:
        raise CameraError("The desktop app needs OpenCV with windows: pip install opencv-python.") from None
    from .assets import outputs_dir
    from .images import save_image

    width, height = parse_resolution(resolution)
    window = "stlib webcam (q: quit, m: mirror, s: snapshot, +/-: strength)"
    try:
        cv2.namedWindow(window, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        raise CameraError(
            "This OpenCV build has no window support (opencv-python-headless): install the desktop build with "
            "pip uninstall -y opencv-python-headless && pip install opencv-python, or use the notebook widget."
        ) from None
    reader = CameraReader(camera)
    shown, start, recent = 0, time.perf_counter(), deque(maxlen=30)
    try:
        while max_frames is None or shown < max_frames:
            frame = reader.read()
            if frame is None:
                raise CameraError(f"Camera {camera} stopped delivering frames.")
            styled = process_frame(model, fit_frame(frame, width, height), strength=strength, mirror=mirror)
            recent.append(time.perf_counter())
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
            bgr = cv2.cvtColor(styled, cv2.COLOR_RGB2BGR)
            cv2.putText(bgr, f"{fps:.1f} fps  strength {strength:.2f}", (8, 20), 0, 0.5, (255, 255, 255), 1)
            cv2.imshow(window, bgr)
            shown += 1
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                break
            if key == ord("m"):
                mirror = not mirror
            elif key == ord("s"):
                path = save_image(
                    Image.fromarray(styled), outputs_dir() / f"webcam_{time.strftime('%Y%m%d-%H%M%S')}.jpg"
                )
                print(f"saved {path}")
            elif key in (ord("+"), ord("=")):
                strength = min(1.0, strength + 0.1)
            elif key == ord("-"):
                strength = max(0.0, strength - 0.1)
    finally:
        reader.close()
        cv2.destroyAllWindows()
    seconds = time.perf_counter() - start
    return {"frames": shown, "seconds": seconds, "fps": shown / seconds if seconds > 0 else 0.0}
