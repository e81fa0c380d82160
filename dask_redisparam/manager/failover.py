"""What a failover lost of a run, and what to do about it: a pure policy, with no I/O (in the style of ``dask.local``).

A replica promoted by Sentinel has the writes it had received. Writes that the old primary acknowledged and had not
sent on yet are lost: values and completion records of tasks the manager already counted as finished, messages it
pushed, claims and completions of workers, even the run's ``alive`` key. After a failover the manager takes one look
at what the new primary holds (:meth:`Backend.snapshot_run <dask_redisparam.backend.Backend.snapshot_run>`) and
:func:`plan_recovery` decides:

- a finished task whose value is gone but still needed (requested, or a dependent has not finished) runs again, and
  so do, transitively, the finished inputs it needs whose values are gone too (released, or never stored: the middle
  of a chain);
- a large literal of the graph whose upload is gone is uploaded again; a value the run did not compute (copied for
  ``redo=`` or from a dead run, or read from a result directory) cannot be made again: the run fails with
  :class:`~dask_redisparam.errors.RunLost` naming it;
- a message in flight that reads a value that runs again is dropped (*superseded*; withdrawn if still queued, its
  result ignored if it comes), and its tasks wait for that value;
- any other message in flight that is in no queue, no processing list and no ``done`` list is pushed again.

Nothing is recorded twice: a message's record is applied once (by message id), a task that runs again comes back in
a new message, and the results of superseded or duplicated messages are dropped as repeats.

Examples
--------
>>> deps = {"a": set(), "b": {"a"}, "c": {"b"}}
>>> plan = plan_recovery(
...     in_flight={7: ["c"]}, found=set(), resending=set(), finished={"a", "b"},
...     value_of={"b": ("1",)}, present=set(), needed={"b"}, held_inline=set(),
...     dependencies=deps, literals=set(), known=set())
>>> sorted(plan.recompute), plan.supersede, plan.resend
(['a', 'b'], [7], [])
"""

from __future__ import annotations

from collections.abc import Collection, Container, Hashable, Mapping, Sequence
from typing import NamedTuple

__all__ = ["AUDIT_DELAYS", "Recovery", "plan_recovery"]

AUDIT_DELAYS = (0.0, 2.0, 6.0)
"""Seconds after a failover (or a reopened run) at which the manager looks again at what the run has on the new
primary: a worker that checked the old state just before may still drop a message after the first look."""


class Recovery(NamedTuple):
    """What :func:`plan_recovery` decided.

    Attributes
    ----------
    lost : set
        Finished tasks whose value was lost (still needed).
    recompute : set
        Finished tasks to run again: ``lost`` and the inputs they need whose values are gone.
    reupload : set
        Literals of the graph to upload again.
    unrecoverable : set
        Values the run cannot make again (known values: ``redo=``, resume, a result directory).
    supersede : list of int
        Messages in flight that read a value that runs again: drop them, their tasks wait.
    resend : list of int
        Messages in flight found nowhere: push them again.
    """

    lost: set[Hashable]
    recompute: set[Hashable]
    reupload: set[Hashable]
    unrecoverable: set[Hashable]
    supersede: list[int]
    resend: list[int]

    @property
    def empty(self) -> bool:
        """Whether nothing was lost."""
        return not (self.recompute or self.reupload or self.unrecoverable or self.supersede or self.resend)


def plan_recovery(
    *,
    in_flight: Mapping[int, Sequence[Hashable]],
    found: Container[int],
    resending: Container[int],
    finished: Container[Hashable],
    value_of: Mapping[Hashable, Sequence[str]],
    present: Container[str],
    needed: Collection[Hashable],
    held_inline: Container[Hashable],
    dependencies: Mapping[Hashable, Collection[Hashable]],
    literals: Container[Hashable],
    known: Container[Hashable],
) -> Recovery:
    """Decide what to run, upload and push again after a failover (see the module docstring).

    Parameters
    ----------
    in_flight : mapping of int to sequence
        Message id -> the tasks it carries, for every message pushed and not finished.
    found : container of int
        Ids of the run's messages the server has: in the queue, a processing list, or answered in ``done``.
    resending : container of int
        Ids of messages already due to be pushed again (refused by a worker).
    finished : container
        Finished keys.
    value_of : mapping
        Finished key -> the data fields its value needs (its field, and the parts of a large value), for the values
        that live in Redis.
    present : container of str
        The fields of the run's data hash on the server.
    needed : collection
        Finished keys whose value must stay: requested, or with unfinished dependents.
    held_inline : container
        Finished keys whose value the manager holds itself (small literals).
    dependencies : mapping
        Key -> its dependencies.
    literals : container
        Keys of the graph's literals (uploaded again when lost).
    known : container
        Keys whose values the run took from elsewhere (cannot be made again).
    """
    lost = {k for k in needed if k in value_of and any(f not in present for f in value_of[k])}
    recompute: set[Hashable] = set()
    reupload: set[Hashable] = set()
    unrecoverable: set[Hashable] = set()
    stack = list(lost)
    while stack:
        key = stack.pop()
        if key in recompute or key in reupload or key in unrecoverable:
            continue
        if key in known:
            unrecoverable.add(key)
            continue
        if key in literals:
            reupload.add(key)
            continue
        recompute.add(key)
        for dep in dependencies[key]:
            if dep not in finished or dep in held_inline:
                continue  # it will run anyway, or its value is here
            if dep in value_of and all(f in present for f in value_of[dep]):
                continue
            stack.append(dep)
    supersede: list[int] = []
    resend: list[int] = []
    for msg_id, keys in in_flight.items():
        carried = set(keys)
        reads = {dep for key in keys for dep in dependencies[key]} - carried
        if reads & recompute:
            supersede.append(msg_id)
        elif msg_id not in found and msg_id not in resending:
            resend.append(msg_id)
    return Recovery(lost, recompute, reupload, unrecoverable, sorted(supersede), sorted(resend))
