"""The hashes of an attachment: SHA-256 of its bytes and, for an image, its PDQ perceptual hash.

Attachments come from anyone, so decoding is bounded. Only common image formats are opened;
the size in the header is checked before any pixel is decoded, and images above `max_pixels`
are refused (a small file can declare an enormous image: a decompression bomb). Images are
shrunk to at most 512x512 before hashing (JPEGs are decoded at reduced scale directly): PDQ
reduces every image to 64x64 anyway, so the hash barely moves, and a 12-megapixel photo
costs milliseconds instead of a third of a second. PDQ's own quality figure (0-100) says
how much structure the image has; below 50 (flat or nearly blank images) its authors advise
against matching, because such hashes sit close to many unrelated ones.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import pdqhash  # type: ignore[import-untyped]  # ships no type information
from PIL import Image

DEFAULT_MAX_PIXELS = 40_000_000
HASH_SIDE = 512
PDQ_MIN_QUALITY = 50
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
# pdqhash.compute_dihedral's order; PDQ's own names for the eight rotations and flips.
VARIANTS = ("original", "rotate90", "rotate180", "rotate270", "flipx", "flipy", "flip_plus1", "flip_minus1")


class NotHashable(Exception):
    """The data has no PDQ hash; `reason` is a short name for why (never any of the data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PdqHashes:
    hashes: tuple[bytes, ...]  # 32 bytes each, in VARIANTS order: the image itself first
    quality: int


class AttachmentHashes(TypedDict):
    bytes: int
    sha256: str
    pdq: str | None
    quality: int | None
    pdq_skipped: str | None  # why there is no PDQ hash: not-an-image, too-large, undecodable


def _rgb_pixels(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise NotHashable("too-large") from None
    except Exception:  # Pillow answers hostile or foreign bytes with many exception types
        raise NotHashable("not-an-image") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise NotHashable("too-large")
        try:
            image.draft("RGB", (HASH_SIDE, HASH_SIDE))
            image.thumbnail((HASH_SIDE, HASH_SIDE))
            return np.asarray(image.convert("RGB"))
        except Exception:  # truncated or corrupt pixel data, found only while decoding
            raise NotHashable("undecodable") from None


def _bits_to_bytes(vector: np.ndarray) -> bytes:
    # pdqhash gives 256 bits, the most significant first: packed, they read as PDQ's usual hex.
    return np.packbits(vector.astype(np.uint8)).tobytes()


def pdq_hashes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> PdqHashes:
    """The PDQ hashes of the image in `data` and of its rotations and flips (NotHashable if
    it is not an image that may be decoded)."""
    pixels = _rgb_pixels(data, max_pixels)
    vectors, quality = pdqhash.compute_dihedral(pixels)
    return PdqHashes(tuple(_bits_to_bytes(v) for v in vectors), int(quality))


def hashes_of(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> AttachmentHashes:
    """What an operator puts in a hash list for `data`: its SHA-256 and, for an image, its PDQ
    hash and quality."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        pdq = pdq_hashes(data, max_pixels)
    except NotHashable as exc:
        return {"bytes": len(data), "sha256": sha256, "pdq": None, "quality": None, "pdq_skipped": exc.reason}
    return {
        "bytes": len(data),
        "sha256": sha256,
        "pdq": pdq.hashes[0].hex(),
        "quality": pdq.quality,
        "pdq_skipped": None,
    }
