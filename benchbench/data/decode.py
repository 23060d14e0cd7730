"""Image bytes -> (C, size, size) uint8. decode_bytes: torchvision's decoders (libjpeg-turbo
for JPEG, also PNG and WebP), shorter side resized (bilinear, antialiased) and centre-cropped;
PIL for the other formats (BMP, TIFF, PPM). decode_crop / decode_eval: the training and
evaluation views of the whole image for folders and shards."""
from __future__ import annotations

import io
import math

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


# Views of a whole decoded image (data.augment=inception/augreg on folders and shards): the
# crop is drawn on the full image, then resized once to the model's input.
CROP_AREA = (0.05, 1.0)  # big_vision pp/ops_image.py get_inception_crop: area_min=5, area_max=100
CROP_ASPECT = (3 / 4, 4 / 3)  # tf.image.sample_distorted_bounding_box's default aspect_ratio_range


def inception_box(width: int, height: int, seed: int) -> tuple[tuple[int, int, int, int], bool]:
    """((left, top, w, h), flip) from `seed`: torchvision's RandomResizedCrop.get_params
    (area CROP_AREA, log-uniform aspect CROP_ASPECT, 10 draws, then its centre-crop
    fallback) on a (height, width) image, and a fair coin for the horizontal flip."""
    from torchvision.transforms import RandomResizedCrop

    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays as it was
        torch.default_generator.manual_seed(seed)  # the CPU generator only: 40x faster than torch.manual_seed
        top, left, h, w = RandomResizedCrop.get_params(torch.empty(0, height, width), list(CROP_AREA),
                                                       list(CROP_ASPECT))
        flip = bool(torch.rand(()) < 0.5)
    return (left, top, w, h), flip


def decode_crop(data: bytes, size: int, channels: int, seed: int) -> torch.Tensor:
    """(channels, size, size) uint8: an inception crop of the whole image, resized (bilinear,
    antialiased) to `size`, flipped or not. JPEGs decode at the smallest DCT scale (1/2, 1/4,
    1/8) that still leaves the box at least `size` pixels on its shorter side (PIL draft)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        (left, top, w, h), flip = inception_box(*im.size, seed)
        full = im.size
        if im.format == "JPEG":
            need = size / max(1, min(w, h))  # the scale at which the box is `size` pixels
            if need < 1:
                im.draft(im.mode, (math.ceil(full[0] * need), math.ceil(full[1] * need)))
        sx, sy = im.size[0] / full[0], im.size[1] / full[1]  # 1, or the draft's reduction
        box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        out = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR, box=box)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(out, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))


def eval_resize(size: int, crop_pct: float | None) -> int:
    """The shorter side before the central `size` crop: floor(size / crop_pct), as timm's
    resolve_data_config (big_vision: resize_small(size / crop_pct) then central_crop(size))."""
    return size if crop_pct is None or crop_pct >= 1 else int(math.floor(size / crop_pct))


def decode_eval(data: bytes, size: int, channels: int, crop_pct: float | None) -> torch.Tensor:
    """(channels, size, size) uint8: shorter side resized to size / crop_pct, central crop."""
    img = decode_bytes(data, eval_resize(size, crop_pct), channels)
    return center_crop(img, [size, size]).contiguous() if img.shape[-1] != size else img
