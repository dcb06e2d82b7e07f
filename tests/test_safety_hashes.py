"""Attachments against the operator's hash lists (issue 9, item 4, attachments): SHA-256 exact
and PDQ perceptual matching of a resized, re-encoded near-copy, the distance threshold, bounded
decoding of hostile uploads, refusals that name the problem, reloading without restart, and
`keyhold safety hash` / `keyhold safety hashes check`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import keyhold_cli
from keyhold.safety.attachments import AttachmentMatcher
from keyhold.safety.hash_lists import (
    HASH_LISTS_FILE,
    HashListError,
    HashLists,
    distances_to,
    load,
    pack,
    parse,
)
from keyhold.safety.image_hashes import hashes_of


def picture(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """Gradients, shapes and noise from a seeded generator: an image with real structure."""
    rng = np.random.default_rng(seed)
    width, height = size
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    f = rng.uniform(0.5, 3, 3)
    red = (np.sin(x * f[0] * 6 + y * 2) * 0.5 + 0.5) * 255
    green = x * y * 255 * np.ones((height, width))
    blue = (np.cos(y * f[1] * 5 - x * f[2] * 3) * 0.5 + 0.5) * 255
    pixels = np.stack([red, green, blue], -1) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
        box = [x0, y0, x0 + int(rng.integers(30, 300)), y0 + int(rng.integers(30, 300))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def encoded(image: Image.Image, fmt: str, **options: int) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def near_copy(image: Image.Image) -> bytes:
    """What a re-upload looks like: scaled to 0.6x and re-encoded as a JPEG at quality 70."""
    smaller = image.resize((int(image.width * 0.6), int(image.height * 0.6)), Image.Resampling.BILINEAR)
    return encoded(smaller, "JPEG", quality=70)


def png_header(width: int, height: int) -> bytes:
    """A small valid-looking PNG that declares an enormous image (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def distance(a: str, b: str) -> int:
    return int(
        np.unpackbits(
            np.frombuffer(bytes.fromhex(a), np.uint8) ^ np.frombuffer(bytes.fromhex(b), np.uint8)
        ).sum()
    )


def lists_toml(sha256: list[str], max_distance: int = 31) -> str:
    """An exact list holding `sha256`, and a perceptual one reading hashes/pdq.txt."""
    return f"""
[[lists]]
name = "exact"
category = "csam"
action = "block"
kind = "sha256"
hashes = {json.dumps(sha256)}

[[lists]]
name = "perceptual"
category = "csam"
action = "hold"
kind = "pdq"
max_distance = {max_distance}
file = "hashes/pdq.txt"
"""


@pytest.fixture(scope="module")
def original() -> Image.Image:
    return picture(1)


@pytest.fixture(scope="module")
def cli_hashes(
    tmp_path_factory: pytest.TempPathFactory, original: Image.Image
) -> tuple[dict[str, object], str]:
    """The original's hashes as the CLI prints them: JSON, and lines for a hash file."""
    image_path = tmp_path_factory.mktemp("image") / "original.png"
    image_path.write_bytes(encoded(original, "PNG"))
    [hashes] = json.loads(keyhold_cli("safety", "hash", "--json", str(image_path)).stdout)
    pdq_lines = keyhold_cli("safety", "hash", "--list-of", "pdq", str(image_path)).stdout
    assert pdq_lines.startswith(f"{hashes['pdq']}  # ")
    return hashes, pdq_lines


@pytest.fixture
def listed(tmp_path: Path, cli_hashes: tuple[dict[str, object], str]) -> tuple[Path, dict[str, object]]:
    """A data dir whose hash lists hold the original's hashes, computed with the CLI."""
    hashes, pdq_lines = cli_hashes
    (tmp_path / "hashes").mkdir()
    (tmp_path / "hashes" / "pdq.txt").write_text("# known images\n" + pdq_lines)
    (tmp_path / HASH_LISTS_FILE).write_text(lists_toml([str(hashes["sha256"])]))
    return tmp_path, hashes


def test_the_cli_prints_the_hashes_of_images_and_other_files(tmp_path: Path, original: Image.Image) -> None:
    data = encoded(original, "PNG")
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    result = json.loads(
        keyhold_cli("safety", "hash", "--json", str(tmp_path / "a.png"), str(tmp_path / "notes.txt")).stdout
    )
    assert result[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert result[0]["pdq"] == hashes_of(data)["pdq"] and len(result[0]["pdq"]) == 64
    assert result[0]["quality"] >= 50
    assert result[1]["pdq"] is None and result[1]["pdq_skipped"] == "not-an-image"
    text = keyhold_cli("safety", "hash", str(tmp_path / "a.png")).stdout
    assert f"sha256  {result[0]['sha256']}" in text and f"pdq     {result[0]['pdq']}  quality" in text


def test_an_exact_copy_matches_by_sha256(
    listed: tuple[Path, dict[str, object]], original: Image.Image
) -> None:
    home, _ = listed
    verdict = AttachmentMatcher.for_home(home).match(encoded(original, "PNG"), "image/png")
    assert verdict.action == "block" and verdict.category == "csam"
    assert "hash:exact:sha256" in verdict.fired
    assert verdict.scores == {"csam": 1.0}
    assert "csam" in verdict.policy


def test_a_resized_reencoded_near_copy_matches_by_pdq_only(
    listed: tuple[Path, dict[str, object]], original: Image.Image
) -> None:
    home, hashes = listed
    copy = near_copy(original)
    assert hashlib.sha256(copy).hexdigest() != hashes["sha256"]
    measured = distance(str(hashes_of(copy)["pdq"]), str(hashes["pdq"]))
    verdict = AttachmentMatcher.for_home(home).match(copy, "image/jpeg")
    assert verdict.action == "hold" and verdict.category == "csam"
    assert verdict.fired == (f"hash:perceptual:pdq:distance={measured}",)
    assert measured <= 31


def test_a_mirrored_copy_matches_through_the_flipped_hashes(
    listed: tuple[Path, dict[str, object]], original: Image.Image
) -> None:
    home, hashes = listed
    mirrored = encoded(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    assert distance(str(hashes_of(mirrored)["pdq"]), str(hashes["pdq"])) > 64  # unmatched as it stands
    verdict = AttachmentMatcher.for_home(home).match(mirrored, "image/png")
    assert verdict.action == "hold"
    [fired] = verdict.fired
    assert fired.startswith("hash:perceptual:pdq:distance=") and fired.rsplit(":", 1)[1] in {"flipx", "flipy"}


def test_a_different_image_does_not_match(listed: tuple[Path, dict[str, object]]) -> None:
    home, hashes = listed
    other = encoded(picture(2), "JPEG", quality=90)
    assert distance(str(hashes_of(other)["pdq"]), str(hashes["pdq"])) > 31
    verdict = AttachmentMatcher.for_home(home).match(other, "image/jpeg")
    assert verdict.action == "allow" and verdict.fired == ()


def test_the_distance_threshold_is_honoured(
    listed: tuple[Path, dict[str, object]], original: Image.Image
) -> None:
    home, hashes = listed
    copy = near_copy(original)
    measured = distance(str(hashes_of(copy)["pdq"]), str(hashes["pdq"]))
    assert measured >= 1  # the re-encoding moved the hash, so a bound below it exists
    (home / HASH_LISTS_FILE).write_text(lists_toml([], max_distance=measured - 1))
    assert AttachmentMatcher.for_home(home).match(copy, None).action == "allow"
    (home / HASH_LISTS_FILE).write_text(lists_toml([], max_distance=measured))
    assert AttachmentMatcher.for_home(home).match(copy, None).action == "hold"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.7 not an image at all" * 50, "not-an-image"),
        (png_header(100_000, 100_000), "too-large"),  # Pillow's own bomb check refuses it on open
        (png_header(8000, 8000), "too-large"),  # under Pillow's limit, over ours: refused before decoding
        (encoded(picture(3, (300, 200)), "PNG")[:2000], "undecodable"),  # truncated
        (encoded(Image.new("RGB", (400, 300), (128, 128, 128)), "PNG"), "quality=0"),  # flat: no structure
    ],
    ids=["pdf", "bomb", "over-limit", "truncated", "flat"],
)
def test_unhashable_uploads_are_allowed_with_a_note(
    listed: tuple[Path, dict[str, object]], data: bytes, reason: str
) -> None:
    home, _ = listed
    verdict = AttachmentMatcher.for_home(home).match(data, "image/png")
    assert verdict.action == "allow"
    assert verdict.fired == (f"hash:pdq:skipped:{reason}",)


def test_a_flat_image_is_not_matched_even_when_listed(tmp_path: Path) -> None:
    flat = encoded(Image.new("RGB", (400, 300), (128, 128, 128)), "PNG")
    (tmp_path / "hashes").mkdir()
    (tmp_path / "hashes" / "pdq.txt").write_text(str(hashes_of(flat)["pdq"]) + "\n")
    (tmp_path / HASH_LISTS_FILE).write_text(lists_toml([]))
    # Distance 0 from a listed hash, yet not a match: a flat image's hash says nothing about it.
    verdict = AttachmentMatcher.for_home(tmp_path).match(flat, "image/png")
    assert verdict.action == "allow" and verdict.fired[0].startswith("hash:pdq:skipped:quality=")


def test_the_matcher_s_own_pixel_limit(listed: tuple[Path, dict[str, object]], original: Image.Image) -> None:
    home, _ = listed
    copy = near_copy(original)  # 480 x 360
    assert AttachmentMatcher.for_home(home, max_pixels=480 * 360).match(copy, None).action == "hold"
    limited = AttachmentMatcher.for_home(home, max_pixels=480 * 360 - 1).match(copy, None)
    assert limited.action == "allow" and limited.fired == ("hash:pdq:skipped:too-large",)


def test_without_a_file_nothing_is_hashed_or_matched(tmp_path: Path, original: Image.Image) -> None:
    matcher = AttachmentMatcher.for_home(tmp_path)
    assert matcher.lists == HashLists() and matcher.error is None
    verdict = matcher.match(encoded(original, "PNG"), "image/png")
    assert verdict.action == "allow" and verdict.fired == ()


def test_many_list_entries_are_compared_exactly(tmp_path: Path) -> None:
    """The packed XOR-and-popcount distances agree with counting bits one hash at a time, and
    the closest of 100,000 entries is found."""
    rng = np.random.default_rng(7)
    entries = [rng.bytes(32) for _ in range(100_000)]
    query = bytearray(entries[54_321])
    for bit in (3, 77, 200):  # three bits away from one entry
        query[bit // 8] ^= 1 << (bit % 8)
    (tmp_path / "many.txt").write_text("\n".join(h.hex() for h in entries))
    toml = '[[lists]]\nname = "many"\ncategory = "terror"\naction = "flag"\nkind = "pdq"\nmax_distance = 3\nfile = "many.txt"\n'
    lists = parse(toml, tmp_path)
    [found] = lists.pdq_matches([bytes(query)])
    assert found.distance == 3 and found.hash_list.name == "many"
    small = entries[:200]
    fast = distances_to(pack(small), pack([bytes(query)])[:, 0])
    slow = [sum(bin(a ^ b).count("1") for a, b in zip(h, query, strict=True)) for h in small]
    assert fast.tolist() == slow
    (tmp_path / "many.txt").write_text(entries[0].hex() + "\n")
    assert load_text(toml, tmp_path).pdq_matches([bytes(query)]) == []


def load_text(toml: str, home: Path) -> HashLists:
    (home / HASH_LISTS_FILE).write_text(toml)
    return load(home / HASH_LISTS_FILE)


LIST = '[[lists]]\nname = "l1"\ncategory = "scam"\naction = "flag"\n'
HEX = "ab" * 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[lists]\n", r"not TOML"),
        ("lists = 3\n", r"lists: must be an array of tables"),
        ("[other]\n", r"unknown setting 'other'"),
        ('[[lists]]\nname = "Bad Name"\n', r"lists\[0\]\.name: a list name is lower-case"),
        (
            LIST + f'kind = "sha256"\nhashes = ["{HEX}"]\n' + LIST + f'kind = "sha256"\nhashes = ["{HEX}"]\n',
            r"list 'l1': a second list",
        ),
        (LIST + 'kind = "md5"\nhashes = []\n', r"list 'l1'\.kind: must be one of sha256, pdq, not 'md5'"),
        (
            LIST.replace('"flag"', '"allow"') + 'kind = "pdq"\nhashes = []\n',
            r"list 'l1'\.action: must be one of flag, hold, block",
        ),
        (
            LIST.replace('"scam"', '"Scam"') + 'kind = "pdq"\nhashes = []\n',
            r"list 'l1'\.category: a category is a lower-case name",
        ),
        (
            LIST + 'kind = "pdq"\nmax_distance = 65\nhashes = []\n',
            r"list 'l1'\.max_distance: .* from 0 to 64",
        ),
        (
            LIST + 'kind = "sha256"\nmax_distance = 3\nhashes = []\n',
            r"list 'l1'\.max_distance: only pdq lists",
        ),
        (LIST + 'kind = "pdq"\n', r"list 'l1': needs hashes = \[\.\.\.\] or file"),
        (
            LIST + 'kind = "pdq"\nhashes = ["abc"]\n',
            r"list 'l1'\.hashes\[0\]: not a 64-digit hex hash \('abc'\)",
        ),
        (LIST + 'kind = "pdq"\nfile = "missing.txt"\n', r"list 'l1': file .*missing\.txt does not exist"),
        (
            LIST + 'kind = "pdq"\nfile = "bad.txt"\n',
            r"list 'l1': .*bad\.txt line 3: not a 64-digit hex hash \('zz'\)",
        ),
        (LIST + 'kind = "pdq"\nhashes = []\ncolour = "red"\n', r"list 'l1': unknown setting 'colour'"),
    ],
)
def test_malformed_lists_are_refused_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.txt").write_text(f"# comment\n{HEX}  # fine\nzz\n")
    with pytest.raises(HashListError, match=message):
        parse(text, tmp_path)


def test_hashes_check_accepts_a_good_file_and_names_the_problem_in_a_bad_one(
    listed: tuple[Path, dict[str, object]],
) -> None:
    home, _ = listed
    ok = keyhold_cli("safety", "hashes", "check", "--home", str(home))
    assert "ok" in ok.stdout
    assert "exact: sha256, 1 hashes -> block (csam)" in ok.stdout
    assert "perceptual: pdq, max_distance 31, 1 hashes -> hold (csam)" in ok.stdout
    (home / "hashes" / "pdq.txt").write_text(f"{HEX}\nnot-a-hash\n")
    bad = keyhold_cli("safety", "hashes", "check", str(home / HASH_LISTS_FILE), check=False)
    assert bad.returncode == 1
    assert "list 'perceptual'" in bad.stderr and "line 2" in bad.stderr
    missing = keyhold_cli("safety", "hashes", "check", str(home / "nope.toml"), check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def touch(path: Path, text: str, seconds_later: int) -> None:
    """Write and move the modification time on, so the change shows whatever the file system's
    timestamp resolution."""
    path.write_text(text)
    stamp = path.stat().st_mtime + seconds_later
    os.utime(path, (stamp, stamp))


def test_reload_picks_up_new_lists_and_edits_to_their_hash_files(
    tmp_path: Path, original: Image.Image
) -> None:
    clock = Clock()
    matcher = AttachmentMatcher(tmp_path / HASH_LISTS_FILE, clock=clock)
    copy = near_copy(original)
    assert matcher.match(copy, None).action == "allow"
    (tmp_path / "hashes").mkdir()
    touch(tmp_path / "hashes" / "pdq.txt", f"{HEX}\n", 1)
    touch(tmp_path / HASH_LISTS_FILE, lists_toml([]), 1)
    assert matcher.match(copy, None).action == "allow"  # checked at most once a second
    clock.now += 1.5
    assert [h.name for h in matcher.lists.lists] == ["exact", "perceptual"]
    assert matcher.match(copy, None).action == "allow"  # the list does not hold this image yet
    touch(tmp_path / "hashes" / "pdq.txt", f"{HEX}\n{hashes_of(encoded(original, 'PNG'))['pdq']}\n", 2)
    clock.now += 1.5
    assert matcher.match(copy, None).action == "hold"  # only the hash file changed


def test_a_broken_edit_keeps_the_last_good_lists(
    listed: tuple[Path, dict[str, object]], original: Image.Image
) -> None:
    home, _ = listed
    clock = Clock()
    matcher = AttachmentMatcher(home / HASH_LISTS_FILE, clock=clock)
    data = encoded(original, "PNG")
    assert matcher.match(data, None).action == "block"
    touch(home / HASH_LISTS_FILE, "[[lists]]\nname = 5\n", 3)
    clock.now += 2
    assert matcher.match(data, None).action == "block"
    assert matcher.error is not None and "lists[0].name" in matcher.error
    touch(home / HASH_LISTS_FILE, "", 4)
    clock.now += 2
    assert matcher.match(data, None).action == "allow" and matcher.error is None
