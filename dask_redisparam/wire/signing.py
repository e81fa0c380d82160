"""HMAC-SHA256 signatures on everything that is unpickled: task messages, stored values, completion records
(and Poly1305 tags, keyed from the same secret, on the parts of large values).

Whoever can write to the Redis server could otherwise make pickle run code on every worker and on the manager.
With a shared secret, every payload carries ``<key id>|<hex MAC>|`` in front, the MAC computed over a purpose tag,
the job name (and for messages and records the run and message ids) and the payload; the reader checks it with a
constant-time compare **before** unpickling and rejects what fails. The secret is never stored in Redis.

Several keys may be known at once (rotation): the first one signs, all of them verify. Without a secret nothing
is signed, and only unsigned payloads are accepted.

Examples
--------
>>> signer = Signer.from_secret("a-long-enough-s3cret")
>>> sealed = signer.seal(b"value", b"job", b"payload")
>>> bytes(signer.unseal(sealed, b"value", b"job"))
b'payload'
>>> signer.unseal(sealed, b"value", b"other-job")
Traceback (most recent call last):
...
dask_redisparam.errors.PayloadRejected: bad signature (key id '0')
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.poly1305 import Poly1305

try:  # OpenSSL's HMAC objects, without the Python wrapper of the hmac module (its copy and hexdigest cost as much)
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # pragma: no cover - a Python built without OpenSSL
    _hmac_new = hmac.new  # type: ignore[assignment]

from ..config.names import SECRET_ENV, SECRET_FILE_ENV
from ..errors import ConfigurationError, PayloadRejected

__all__ = ["SECRET_ENV", "SECRET_FILE_ENV", "PayloadRejected", "Signer", "signer_from_environment"]


_KEPT_PURPOSES = frozenset({b"value", b"done"})
"""Purposes whose contexts repeat (the job; the job and run), so their HMAC states are worth keeping."""
_KEPT_HEADS = 64
"""At most this many kept HMAC states (then they are dropped and made again)."""
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]+")
_KEY_ENTRY = re.compile(r"[A-Za-z0-9_.-]+=.+")


class Signer:
    """Signs and checks payloads with one or more HMAC-SHA256 keys.

    Parameters
    ----------
    keys : mapping of str to bytes
        Key id -> secret; the first one signs.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ConfigurationError("secret: at least one key is needed")
        for kid, key in keys.items():
            if not _KEY_ID.fullmatch(kid):
                raise ConfigurationError(f"secret: key id {kid!r} must be letters, digits, '_', '.' or '-'")
            if len(key) < 16:
                raise ConfigurationError(f"secret: key {kid!r} is too short (at least 16 bytes)")
        self._keys = dict(keys)
        self._heads: dict[tuple[bytes, bytes, bytes], Any] = {}
        self.key_id = next(iter(self._keys))
        self._prefix = self.key_id.encode() + b"|"

    @classmethod
    def from_secret(cls, secret: str | bytes | Mapping[str, str | bytes]) -> Signer:
        """From one secret (key id ``0``), ``"id=secret,id=secret"`` text, or a mapping of key id to secret.

        Examples
        --------
        >>> Signer.from_secret("k2=" + "a" * 16 + ",k1=" + "b" * 16).key_id
        'k2'
        """
        if isinstance(secret, Mapping):
            return cls({kid: _bytes(v) for kid, v in secret.items()})
        text = (secret.decode() if isinstance(secret, bytes) else secret).strip()
        parts = [part.strip() for part in text.split(",")]
        if all(_KEY_ENTRY.fullmatch(part) for part in parts):
            return cls({kid: _bytes(value) for kid, value in (part.split("=", 1) for part in parts)})
        return cls({"0": _bytes(text)})

    @classmethod
    def generate(cls) -> Signer:
        """A fresh random key (for a private pool: the embedded server and its local workers)."""
        return cls({"0": secrets.token_hex(32).encode()})

    def to_env(self) -> str:
        """The secret as :data:`SECRET_ENV` text (pass it only to child processes; never log it)."""
        return ",".join(f"{kid}={key.decode()}" for kid, key in self._keys.items())

    def __repr__(self) -> str:
        return f"Signer(key_ids={list(self._keys)!r})"

    def __reduce__(self) -> tuple[type[Signer], tuple[dict[str, bytes]]]:
        return (Signer, (self._keys,))  # without the kept HMAC states, which do not pickle

    def _head(self, key: bytes, purpose: bytes, context: bytes) -> Any:
        """The HMAC state after ``key``, ``purpose`` and ``context``, to copy for each payload. Kept for the purposes
        whose contexts repeat (values, records: a few per run); a copy costs a third of a new HMAC."""
        head = (key, purpose, context)
        base = self._heads.get(head)
        if base is None:
            base = _hmac_new(key, purpose + b"\0" + context + b"\0", "sha256")
            if purpose in _KEPT_PURPOSES:
                if len(self._heads) >= _KEPT_HEADS:
                    self._heads.clear()
                self._heads[head] = base
        return base

    def _mac(self, key: bytes, purpose: bytes, context: bytes, payload: bytes | memoryview) -> bytes:
        mac = self._head(key, purpose, context).copy()
        mac.update(payload)
        return mac.hexdigest().encode()  # type: ignore[no-any-return]

    def seal(self, purpose: bytes, context: bytes, payload: bytes) -> bytes:
        """``<key id>|<MAC>|payload``, the MAC bound to ``purpose`` and ``context`` (job, run, message...)."""
        mac = self._mac(self._keys[self.key_id], purpose, context, payload)
        return self._prefix + mac + b"|" + payload

    def seal_many(self, purpose: bytes, context: bytes, payloads: list[bytes]) -> list[bytes]:
        """:meth:`seal` of each payload (one context): the same bytes, faster for many small ones.

        Examples
        --------
        >>> signer = Signer.from_secret("a-long-enough-s3cret")
        >>> signer.seal_many(b"value", b"job", [b"a", b"b"]) == [signer.seal(b"value", b"job", p) for p in (b"a", b"b")]
        True
        """
        base, prefix = self._head(self._keys[self.key_id], purpose, context), self._prefix
        out = []
        for payload in payloads:
            mac = base.copy()
            mac.update(payload)
            out.append(prefix + mac.hexdigest().encode() + b"|" + payload)
        return out

    def unseal_many(
        self, sealed: Sequence[bytes | None], purpose: bytes, context: bytes
    ) -> list[memoryview | PayloadRejected | None]:
        """:meth:`unseal` of each blob (one context): its payload, or the refusal; None stays None. Faster for many
        small blobs signed with the signing key (any other goes through :meth:`unseal`).

        Examples
        --------
        >>> signer = Signer.from_secret("a-long-enough-s3cret")
        >>> forged = b"0|" + b"0" * 64 + b"|p"
        >>> got = signer.unseal_many([signer.seal(b"value", b"job", b"p"), None, forged], b"value", b"job")
        >>> bytes(got[0]), got[1], got[2]
        (b'p', None, PayloadRejected("bad signature (key id '0')"))
        """
        prefix, start = self._prefix, len(self._prefix)
        base = self._head(self._keys[self.key_id], purpose, context)
        out: list[memoryview | PayloadRejected | None] = []
        for blob in sealed:
            if blob is None:
                out.append(None)
                continue
            if blob.startswith(prefix) and blob[start + 64 : start + 65] == b"|":
                payload = memoryview(blob)[start + 65 :]
                mac = base.copy()
                mac.update(payload)
                if hmac.compare_digest(blob[start : start + 64], mac.hexdigest().encode()):
                    out.append(payload)
                    continue
            try:
                out.append(self.unseal(blob, purpose, context))
            except PayloadRejected as e:
                out.append(e)
        return out

    def bulk_authenticator(self, context: bytes, nonce: bytes, kid: str | None = None) -> Poly1305:
        """A Poly1305 authenticator for the parts of one large value (see :mod:`dask_redisparam.wire.bulk`).

        Its one-time key is HMAC-SHA256 of ``context`` (the job) and ``nonce`` (random, one per value) under
        the key ``kid`` (default: the signing key): Poly1305 is five times faster than HMAC-SHA256 here and
        is safe as long as no key is used twice, which the nonce ensures.

        Examples
        --------
        >>> signer = Signer.from_secret("a-long-enough-s3cret")
        >>> mac = signer.bulk_authenticator(b"job", b"n" * 16)
        >>> mac.update(b"part")
        >>> tag = mac.finalize()
        >>> check = signer.bulk_authenticator(b"job", b"n" * 16, "0")
        >>> check.update(b"part")
        >>> check.verify(tag)
        """
        key = self._keys.get(self.key_id if kid is None else kid)
        if key is None:
            raise PayloadRejected(f"payload signed with an unknown key id {kid!r}", "unknown-key")
        return Poly1305(hmac.new(key, b"bulk\0" + context + b"\0" + nonce, hashlib.sha256).digest())

    def unseal(self, sealed: bytes | memoryview, purpose: bytes, context: bytes) -> memoryview:
        """The payload of a sealed blob, if its signature holds; else :class:`PayloadRejected`."""
        view = memoryview(sealed)
        head = bytes(view[:120]).split(b"|", 2)
        if len(head) < 3 or head[:2] == [b"", b""]:
            raise PayloadRejected("payload is not signed (this process requires signatures)", "unsigned")
        kid, mac = head[0].decode(errors="replace"), head[1]
        key = self._keys.get(kid)
        if key is None:
            raise PayloadRejected(f"payload signed with an unknown key id {kid!r}", "unknown-key")
        payload = view[len(head[0]) + len(head[1]) + 2 :]
        if not hmac.compare_digest(mac, self._mac(key, purpose, context, payload)):
            raise PayloadRejected(f"bad signature (key id {kid!r})", "bad-signature")
        return payload


def unseal_many(
    signer: Signer | None, sealed: Sequence[bytes | None], purpose: bytes, context: bytes
) -> list[memoryview | PayloadRejected | None]:
    """:func:`unseal` of each blob: its payload, or the refusal (None stays None)."""
    if signer is not None:
        return signer.unseal_many(sealed, purpose, context)
    out: list[memoryview | PayloadRejected | None] = []
    for blob in sealed:
        try:
            out.append(None if blob is None else unseal(None, blob, purpose, context))
        except PayloadRejected as e:
            out.append(e)
    return out


def unseal(signer: Signer | None, sealed: bytes | memoryview, purpose: bytes, context: bytes) -> memoryview:
    """Check and strip a signature; without a signer, accept only unsigned payloads (``||`` prefix)."""
    if signer is not None:
        return signer.unseal(sealed, purpose, context)
    view = memoryview(sealed)
    if bytes(view[:2]) != b"||":
        raise PayloadRejected("payload is signed but this process has no secret (set REDISPARAM_SECRET)", "no-secret")
    return view[2:]


def seal_many(signer: Signer | None, purpose: bytes, context: bytes, payloads: list[bytes]) -> list[bytes]:
    """:func:`seal` of each payload, with one context."""
    if signer is not None:
        return signer.seal_many(purpose, context, payloads)
    return [b"||" + payload for payload in payloads]


def seal(signer: Signer | None, purpose: bytes, context: bytes, payload: bytes) -> bytes:
    """Sign a payload, or mark it unsigned (``||`` prefix) without a signer."""
    return signer.seal(purpose, context, payload) if signer is not None else b"||" + payload


def signer_from_environment(environ: Mapping[str, str] | None = None) -> Signer | None:
    """The signer configured by :data:`SECRET_ENV` or :data:`SECRET_FILE_ENV`, or None."""
    env = os.environ if environ is None else environ
    if env.get(SECRET_ENV):
        return Signer.from_secret(env[SECRET_ENV])
    path = env.get(SECRET_FILE_ENV)
    if path:
        try:
            with open(path) as f:
                return Signer.from_secret(f.read())
        except OSError as e:
            raise ConfigurationError(f"{SECRET_FILE_ENV}={path!r} cannot be read: {e.strerror}") from None
    return None


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
