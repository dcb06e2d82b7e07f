"""Safety numbers: what two members compare (read aloud, or scan as a QR code) to check that
each sees the other's real master key, and not one the service slipped in.

The derivation (docs/e2ee.md, "Safety numbers", so that any client can reproduce it) is
Signal's numeric fingerprint applied to a member's Matrix user id and Ed25519 master key:

    h_0     = 0x00 0x00 || K || UTF-8(user id)        (K: the 32 raw bytes of the master key)
    h_(i+1) = SHA-512(h_i || K)                        for i = 0 .. 5199
    half    = for each 5-byte chunk c_j = h_5200[5j : 5j+5], j = 0 .. 5:
              big-endian integer of c_j mod 100000, as 5 zero-padded decimal digits

Each member has a 30-digit half; the safety number is the two halves sorted as strings and
concatenated (60 digits), so both members compute the same one.

The QR payload is binary:

    "KHSN" || 0x01 || LP(user id A) || K_A || LP(user id B) || K_B

with LP(x) = 2-byte big-endian length of UTF-8(x), then UTF-8(x); the two members ordered by
the UTF-8 bytes of their user ids (A < B), each K the 32 raw bytes of the master key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives import hashes

from keyhold.crypto.signed_json import decode_base64

VERSION = b"\x00\x00"
ITERATIONS = 5200
QR_MAGIC = b"KHSN"
QR_VERSION = 1


def _sha512(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA512())
    digest.update(data)
    return digest.finalize()


def _raw_key(master_key: str) -> bytes:
    raw = decode_base64(master_key)
    if len(raw) != 32:
        raise ValueError("an Ed25519 master key is 32 bytes")
    return raw


def fingerprint_half(user_id: str, master_key: str) -> str:
    """One member's 30 digits, from the full user id and the master key (unpadded base64)."""
    key = _raw_key(master_key)
    h = VERSION + key + user_id.encode()
    for _ in range(ITERATIONS):
        h = _sha512(h + key)
    return "".join(f"{int.from_bytes(h[5 * j : 5 * j + 5], 'big') % 100000:05d}" for j in range(6))


def qr_payload(user_a: str, key_a: str, user_b: str, key_b: str) -> bytes:
    """The QR payload of a pair: the same bytes whichever member makes it."""
    pair = sorted([(user_a.encode(), _raw_key(key_a)), (user_b.encode(), _raw_key(key_b))])
    out = QR_MAGIC + bytes([QR_VERSION])
    for user, key in pair:
        if len(user) > 0xFFFF:
            raise ValueError("user id too long")
        out += len(user).to_bytes(2, "big") + user + key
    return out


def parse_qr_payload(payload: bytes) -> list[tuple[str, bytes]]:
    """The (user id, raw master key) pairs a QR payload carries; ValueError if malformed."""
    if not payload.startswith(QR_MAGIC) or len(payload) < len(QR_MAGIC) + 1:
        raise ValueError("not a Keyhold safety-number QR code")
    if payload[len(QR_MAGIC)] != QR_VERSION:
        raise ValueError(f"unknown safety-number QR version {payload[len(QR_MAGIC)]}")
    rest, pairs = payload[len(QR_MAGIC) + 1 :], []
    for _ in range(2):
        if len(rest) < 2:
            raise ValueError("truncated safety-number QR code")
        length = int.from_bytes(rest[:2], "big")
        if len(rest) < 2 + length + 32:
            raise ValueError("truncated safety-number QR code")
        pairs.append((rest[2 : 2 + length].decode(), rest[2 + length : 2 + length + 32]))
        rest = rest[2 + length + 32 :]
    if rest:
        raise ValueError("trailing bytes in safety-number QR code")
    return pairs


@dataclass(frozen=True)
class SafetyNumber:
    """The safety number of a pair of members as this side sees their master keys."""

    user_id: str
    master_key: str
    other_user_id: str
    other_master_key: str

    @cached_property
    def digits(self) -> str:
        halves = sorted(
            [
                fingerprint_half(self.user_id, self.master_key),
                fingerprint_half(self.other_user_id, self.other_master_key),
            ]
        )
        return halves[0] + halves[1]

    @property
    def formatted(self) -> str:
        digits = self.digits
        return " ".join(digits[i : i + 5] for i in range(0, 60, 5))

    @property
    def qr_payload(self) -> bytes:
        return qr_payload(self.user_id, self.master_key, self.other_user_id, self.other_master_key)

    def matches(self, scanned: bytes) -> bool:
        """Whether a QR payload scanned from the other member's screen names the same two
        members with the same two master keys as this side sees."""
        try:
            pairs = parse_qr_payload(scanned)
        except (ValueError, UnicodeDecodeError):
            return False
        expected = {
            self.user_id: _raw_key(self.master_key),
            self.other_user_id: _raw_key(self.other_master_key),
        }
        return len(dict(pairs)) == 2 and dict(pairs) == expected
