"""JPEG encoding and decoding in the ALOHA convention (see `recordings.schema`): the RGB array goes
to `cv2.imencode` as it is and comes back from `cv2.imdecode` as RGB."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (n_bytes,) uint8 JPEG. Releases the GIL while encoding (OpenCV)."""
    ok, encoded = cv2.imencode(".jpg", rgb, (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {rgb.shape} and dtype {rgb.dtype}")
    return encoded.reshape(-1)


def decode_jpeg(data: np.ndarray, length: int | None = None) -> np.ndarray:
    """(padded_len,) uint8 JPEG bytes (zero padding allowed) -> (H, W, 3) uint8 RGB.

    length: the JPEG's byte count (`/compress_len`), to skip the padding; None decodes the row.
    Raises ValueError when the bytes are not a decodable image.
    """
    row = np.asarray(data, dtype=np.uint8).reshape(-1)
    if length is not None and 0 < length <= row.size:
        row = row[:length]
    image = cv2.imdecode(row, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{row.size} bytes are not a decodable JPEG image")
    return image


def image_problem(image: object) -> str | None:
    """Why `image` cannot be recorded as a camera frame, or None if it is a (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray):
        return f"frame is {type(image).__name__}, not a numpy array"
    if image.dtype != np.uint8:
        return f"frame has dtype {image.dtype}, expected uint8"
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return f"frame has shape {image.shape}, expected (H, W, 3)"
    return None
