"""Image bytes -> (C, size, size) uint8: torchvision's decoders (libjpeg-turbo for JPEG, also
PNG and WebP), shorter side resized (bilinear, antialiased) and centre-cropped; PIL for the
other formats a class folder may hold (BMP, TIFF, PPM)."""
from __future__ import annotations

import io

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import center_crop, resize

# imported here, not per call: forked DataLoader workers inherit the modules instead of
# importing torchvision each (seconds per worker on a busy node)

# what a broken file raises: PIL (OSError, SyntaxError, ...), torchvision's decoders (RuntimeError)
BAD_IMAGE = (OSError, ValueError, SyntaxError, EOFError, RuntimeError)
_TV_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF")  # JPEG, PNG, WebP (RIFF....WEBP)


def decode_bytes(data: bytes, size: int, channels: int) -> torch.Tensor:
    """(channels, size, size) uint8 from encoded image bytes."""
    if data[:4].startswith(_TV_MAGIC) and (not data.startswith(b"RIFF") or data[8:12] == b"WEBP"):
        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    else:
        img = _pil(data, channels)
    h, w = img.shape[-2:]
    if min(h, w) != size:
        img = resize(img, [size], antialias=True)  # the shorter side to `size`
    return center_crop(img, [size, size]).contiguous()


def _pil(data: bytes, channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its text names the BytesIO, not the file: callers name it
        raise OSError("not an image format torchvision or PIL can read") from None
    with im:
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))
