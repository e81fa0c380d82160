"""The transfer study's account of the machine's limit: our per-hop rate against what moving the same bytes costs
here with nothing of ours (:mod:`.transfer_limit`, run in the same study), and the verdict of the issue's target.

Examples
--------
>>> limit = {"write_s": [0.2], "read_s": [0.1], "tag_s": [0.05], "recycled_s": [0.02], "reported_s": [0.5],
...          "warm_s": [0.01]}
>>> account = Account.of(1e9, limit)
>>> round(account.raw_rate, 2), round(account.signed_rate, 2)
(3.33, 2.5)
>>> print(verdict("1GB", 2.1, account).line())
PASS    transfer-1GB throughput: redisparam 2.10 GB/s per hop (>= 1.2; 0.84x this machine's limit of 2.50 GB/s)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .peers import OURS
from .targets import TRANSFER_LIMIT_RATIO, TRANSFER_RATE, Verdict

__all__ = ["Account", "verdict"]

GB = 1e9


@dataclass(frozen=True)
class Account:
    """Medians of :mod:`.transfer_limit`'s times for an array of ``nbytes``, in seconds."""

    nbytes: float
    write: float
    read: float
    tag: float
    recycled: float
    reported: float
    warm: float

    @classmethod
    def of(cls, nbytes: float, limit: dict[str, Any]) -> Account:
        def med(name: str) -> float:
            return float(statistics.median(limit[name]))

        names = ("write_s", "read_s", "tag_s", "recycled_s", "reported_s", "warm_s")
        return cls(nbytes, *(med(n) for n in names))

    @property
    def raw_rate(self) -> float:
        """GB/s of a raw hop: written to Redis, read back."""
        return self.nbytes / GB / (self.write + self.read)

    @property
    def signed_rate(self) -> float:
        """GB/s of a raw hop plus the writer's and the reader's tag passes (the default signs large values)."""
        return self.nbytes / GB / (self.write + self.read + 2 * self.tag)

    def lines(self, rate: float | None) -> list[str]:
        def gbs(seconds: float) -> str:
            return f"{self.nbytes / GB / seconds:.2f} GB/s" if seconds > 0 else "-"

        ours = "-" if rate is None else f"{rate:.2f} GB/s per hop"
        ratio = "" if rate is None else f": {rate / self.raw_rate:.2f}x raw, {rate / self.signed_rate:.2f}x signed"
        return [
            f"  machine limit (nothing of ours; benchmarks.transfer_limit): raw Unix socket to redis-server, HSET "
            f"{gbs(self.write)}, HGET {gbs(self.read)} -> raw hop {self.raw_rate:.2f} GB/s; with two Poly1305 tag "
            f"passes ({gbs(self.tag)} each) {self.signed_rate:.2f} GB/s",
            f"  {OURS} {ours}{ratio}",
            f"  fresh memory (numpy.empty + fill of the array): in use {gbs(self.warm)}, freed just before (the "
            f"kernel zeroes it) {gbs(self.recycled)}, freed 3 s before (reported to the host, which backs it again) "
            f"{gbs(self.reported)} = {self.reported:.2f} s per array",
        ]


def verdict(label: str, rate: float, account: Account | None) -> Verdict:
    """At least :data:`~.targets.TRANSFER_RATE` GB/s per hop, or at least :data:`~.targets.TRANSFER_LIMIT_RATIO`
    of this machine's (signed) limit measured in the same run."""
    name = f"transfer-{label} throughput"
    if account is None:
        return Verdict(name, rate >= TRANSFER_RATE, f"{OURS} {rate:.2f} GB/s per hop (>= {TRANSFER_RATE}; no limit)")
    share = rate / account.signed_rate
    detail = (
        f"{OURS} {rate:.2f} GB/s per hop (>= {TRANSFER_RATE}; {share:.2f}x this machine's limit of "
        f"{account.signed_rate:.2f} GB/s"
    )
    if rate >= TRANSFER_RATE:
        return Verdict(name, True, detail + ")")
    return Verdict(name, share >= TRANSFER_LIMIT_RATIO, detail + f", >= {TRANSFER_LIMIT_RATIO}x)")
