"""Values kept in Redis beyond their run: persisted values and published datasets.

:class:`HeldOps` keeps a finished run's requested values (:meth:`~HeldOps.hold_values`: its data hash is trimmed to
them and their parts and renamed, O(1), nothing downloaded), reads them back (:meth:`~HeldOps.fetch_held`, and
:meth:`~.large.LargeValues.read_parts_from` for the parts of large ones), renews and deletes the holders' keys, and
stores, lists and removes the description of published datasets (:mod:`.keys`: ``held``, ``dataset_values``,
``dataset_meta``). The values stay sealed as their worker stored them: a seal binds a value to its job only, so a
value that moves to another key of the job still verifies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from . import keys
from .large import LargeValues
from .slots import slot_of_pattern

__all__ = ["HeldOps"]


class HeldOps(LargeValues):
    """Operations on values that outlive their run."""

    def hold_values(self, jobname: str, run_id: str, fields: Sequence[str], target: str, ttl: float | None) -> int:
        """Keep ``fields`` (values and parts) of a run's data hash under ``target``, with a TTL of ``ttl`` seconds
        (None: none); the run's other fields are deleted. One script, no value leaves Redis.

        Returns how many of ``fields`` were there (-1: the data hash is gone).
        """
        ms = 0 if ttl is None else max(1, int(ttl * 1000))
        return int(self._hold(keys=[keys.data(jobname, run_id), target], args=[ms, *fields]))

    def fetch_held(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        """The sealed values of ``fields`` of a hash of kept values (one ``HMGET``)."""
        if not fields:
            return []
        values = cast(list[bytes | None], self._r.hmget(key, list(fields)))
        self.bytes_downloaded += sum(len(v) for v in values if v is not None)
        return values

    def store_held(
        self, key: str, values: Mapping[str, bytes], parts: Sequence[Any] = (), ttl: float | None = None
    ) -> None:
        """Write sealed values (and the parts of large ones) to a hash of kept values, which gets a TTL of ``ttl``
        seconds (None: it keeps the one it has). One round trip, the parts sent as they are (no copy)."""
        commands: list[tuple[Any, ...]] = [("HSET", key, name, view) for name, view in parts]
        commands += [("HSET", key, name, value) for name, value in values.items()]
        if ttl is not None:
            commands.append(("PEXPIRE", key, max(1, int(ttl * 1000))))
        for reply in self._send_large(commands):
            if isinstance(reply, Exception):
                raise reply

    def renew_held(self, held: Sequence[str], ttl: float) -> list[bool]:
        """Renew the TTL of kept values' keys (one round trip); say which still exist."""
        if not held:
            return []
        pipe = self._r.pipeline(transaction=False)
        for key in held:
            pipe.pexpire(key, int(ttl * 1000))
        return [bool(x) for x in pipe.execute()]

    def delete_held(self, held: Sequence[str]) -> int:
        """Delete kept values' keys; returns how many existed."""
        return int(self._r.delete(*held)) if held else 0

    def held_exists(self, key: str) -> bool:
        """Whether a hash of kept values is still there."""
        return bool(self._r.exists(key))

    def publish_meta(self, jobname: str, name: str, meta: Mapping[str, bytes], ttl: float | None) -> None:
        """Write a dataset's description and give it and its values the TTL ``ttl`` seconds (None: none)."""
        meta_key, values = keys.dataset_meta(jobname, name), keys.dataset_values(jobname, name)
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(meta_key)
        pipe.hset(meta_key, mapping=cast(Any, dict(meta)))
        for key in (meta_key, values):
            if ttl is None:
                pipe.persist(key)
            else:
                pipe.pexpire(key, max(1, int(ttl * 1000)))
        pipe.execute()

    def dataset_meta(self, jobname: str, name: str) -> dict[str, bytes]:
        """A dataset's description (empty: no such dataset)."""
        fields = cast(dict[bytes, bytes], self._r.hgetall(keys.dataset_meta(jobname, name)))
        return {k.decode(): v for k, v in fields.items()}

    def dataset_names(self, jobname: str) -> list[str]:
        """Names of the job's published datasets (``SCAN``)."""
        found = (keys.dataset_name_of(k) for k in self.scan_keys(keys.datasets_pattern(jobname)))
        return sorted(name for name in found if name)

    def dataset_records(self, jobname: str) -> dict[str, tuple[dict[str, bytes], int]]:
        """Every dataset's description fields but the collection, and its TTL in ms (-1: none), by name."""
        names = self.dataset_names(jobname)
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(keys.dataset_meta(jobname, name), ["nbytes", "created", "type"])
            pipe.pttl(keys.dataset_meta(jobname, name))
        replies = pipe.execute()
        out: dict[str, tuple[dict[str, bytes], int]] = {}
        for i, name in enumerate(names):
            values, ttl = replies[2 * i], replies[2 * i + 1]
            if values[0] is None:  # unpublished meanwhile
                continue
            fields = dict(zip(("nbytes", "created", "type"), values, strict=True))
            out[name] = ({k: v for k, v in fields.items() if v is not None}, int(ttl))
        return out

    def unpublish(self, jobname: str, name: str) -> bool:
        """Delete a dataset (its description and values); False if there was none."""
        return bool(self._r.delete(keys.dataset_meta(jobname, name), keys.dataset_values(jobname, name)))

    def scan_keys(self, pattern: str) -> list[str]:
        """Key names matching ``pattern`` (SCAN, never KEYS); on a cluster, of every primary, unless the pattern's
        hash tag names one job."""
        if self._cluster is None or slot_of_pattern(pattern) is not None:
            return sorted(k.decode() for k in self._r.scan_iter(match=pattern, count=1000))
        return sorted({k.decode() for node in self._nodes() for k in node.scan_iter(match=pattern, count=1000)})
