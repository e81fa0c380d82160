"""Results saved to a directory, as BiocParallel's ``resultdir``: one file per task.

A :class:`ResultDir` holds, per task, the file ``<token>.pkl``: two consecutive pickles, the key then the value,
so that the key reads without loading the value. The token is the task's stable identity in hex
(:mod:`dask_redisparam.manager.identity`: the same in every process for the same computation, also where dask's
key names are random), or, for a task without one, :func:`key_token` of its key (then a random key is never
found again by another process). The methods take the key and, optionally, the ``identity``. A file is written
to a temporary name in the same directory and renamed into place (``os.replace``), so a ``<token>.pkl`` is always
complete. After each save a line ``<token><TAB><repr(key)>`` is appended to ``index.tsv``, for people and shell
tools (readable without this package); the ``.pkl`` files are authoritative (:meth:`ResultDir.keys`), the
index may hold duplicates or a torn last line.

A :class:`ResultRef` points at one saved result: small and picklable, it stands in for a huge value that stays
on disk (``return_results=False``).

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     rd = ResultDir(path)
...     ref = rd.save(("x", 0), [1, 2, 3])
...     rd.keys(), rd.load(("x", 0)), ref.load(), ("x", 1) in rd
...     ref = rd.save("f-4b1c...", 42, identity=bytes(range(16)))
...     os.path.basename(ref.path), rd.load("another-key", bytes(range(16)))
([('x', 0)], [1, 2, 3], [1, 2, 3], False)
('000102030405060708090a0b0c0d0e0f.pkl', 42)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import tempfile
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import cloudpickle

from .errors import ConfigurationError, SerializationError

__all__ = ["INDEX", "ResultDir", "ResultRef", "key_token", "token_of"]

#: The name of the index file inside a result directory.
INDEX = "index.tsv"

_SUFFIX = ".pkl"
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_PLAIN = (str, bytes, int, float, bool, type(None))


def _is_plain(key: object) -> bool:
    if isinstance(key, tuple):
        return all(_is_plain(part) for part in key)
    return isinstance(key, _PLAIN)


def key_token(key: object) -> str:
    """The file name stem of ``key``: 32 hex digits; for a dask key, the same in every process and version.

    A dask key (str, bytes, int, float or tuples of them) is hashed through its ``repr``; any other object
    through ``dask.base.tokenize``.

    Examples
    --------
    >>> key_token(("x", 0))
    '17acd306ae530586efac52534b216e66'
    >>> key_token("x") != key_token(b"x")
    True
    """
    if _is_plain(key):
        return hashlib.sha256(repr(key).encode("utf-8", "backslashreplace")).hexdigest()[:32]
    from dask.base import tokenize

    return hashlib.sha256(tokenize(key).encode()).hexdigest()[:32]


def token_of(key: object, identity: bytes | None) -> str:
    """The file name stem of a task: its ``identity`` in hex, else :func:`key_token` of its ``key``.

    Examples
    --------
    >>> token_of("x", bytes(16)), token_of("x", None) == key_token("x")
    ('00000000000000000000000000000000', True)
    """
    return identity.hex() if identity is not None else key_token(key)


def _read_key(path: str) -> Any:
    with open(path, "rb") as file:
        return pickle.load(file)


@dataclasses.dataclass(frozen=True)
class ResultRef:
    """A reference to one result saved in a :class:`ResultDir`; picklable, compared by ``path`` and ``key``.

    Attributes
    ----------
    path : str
        The ``.pkl`` file.
    key : object
        The task key.

    Examples
    --------
    >>> import pickle, tempfile
    >>> with tempfile.TemporaryDirectory() as path:
    ...     ref = ResultDir(path).save("x", 42)
    ...     pickle.loads(pickle.dumps(ref)) == ref, ref.load()
    (True, 42)
    """

    path: str
    key: Any

    def load(self) -> Any:
        """Read the value (the file's second pickle)."""
        with open(self.path, "rb") as file:
            pickle.load(file)  # the key
            return pickle.load(file)

    def __repr__(self) -> str:
        return f"ResultRef(key={self.key!r}, path={self.path!r})"


class ResultDir:
    """A directory of saved task results; see the module documentation for its layout.

    Parameters
    ----------
    path : str or os.PathLike
        An existing, writable directory.
    fsync : bool
        Flush each file to the disk before it is renamed into place (survives a power loss).

    Raises
    ------
    ConfigurationError
        If ``path`` does not exist, is not a directory, or is not writable; the message names ``resultdir``.

    Examples
    --------
    >>> ResultDir("/nonexistent/dir")
    Traceback (most recent call last):
    ...
    dask_redisparam.errors.ConfigurationError: resultdir='/nonexistent/dir' does not exist
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ConfigurationError(f"resultdir={path!r} does not exist")
        if not os.path.isdir(path):
            raise ConfigurationError(f"resultdir={path!r} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigurationError(f"resultdir={path!r} is not a writable directory")
        self.path = os.path.abspath(path)
        self.fsync = fsync

    def __repr__(self) -> str:
        return f"ResultDir({self.path!r})"

    def _file(self, key: object, identity: bytes | None = None) -> str:
        return os.path.join(self.path, token_of(key, identity) + _SUFFIX)

    def has(self, key: object, identity: bytes | None = None) -> bool:
        """Whether a result is saved for ``key`` (for the task ``identity``, if given)."""
        return os.path.isfile(self._file(key, identity))

    def __contains__(self, key: object) -> bool:
        return self.has(key)

    def present(self, keys: Iterable[Hashable], identities: Mapping[Hashable, bytes]) -> list[Hashable]:
        """Those of ``keys`` whose results are saved, by identity where ``identities`` has one (by key else).

        Many keys cost one listing of the directory, not one look-up each.
        """
        keys = list(keys)
        if len(keys) <= 64:
            return [key for key in keys if self.has(key, identities.get(key))]
        tokens = self.tokens()
        return [key for key in keys if token_of(key, identities.get(key)) in tokens]

    def tokens(self) -> set[str]:
        """The tokens of every saved result."""
        return {os.path.basename(path)[: -len(_SUFFIX)] for path in self._files()}

    def ref(self, key: object, identity: bytes | None = None) -> ResultRef:
        """A :class:`ResultRef` to the saved result of ``key``; ``KeyError`` if there is none."""
        path = self._file(key, identity)
        if not os.path.isfile(path):
            raise KeyError(key)
        return ResultRef(path, key)

    def load(self, key: object, identity: bytes | None = None) -> Any:
        """The saved value of ``key``; ``KeyError`` if there is none."""
        try:
            return ResultRef(self._file(key, identity), key).load()
        except FileNotFoundError:
            raise KeyError(key) from None

    def save(self, key: object, value: Any, identity: bytes | None = None) -> ResultRef:
        """Save ``value`` under ``key`` (replacing a previous one), atomically; return its reference.

        With ``identity``, the file is named after it, and found again by it whatever the key.

        Raises
        ------
        SerializationError
            If the key or the value cannot be pickled; no file is left behind (nor on any other error).
        """
        token = token_of(key, identity)
        final = os.path.join(self.path, token + _SUFFIX)
        fd, temp = tempfile.mkstemp(prefix=f".{token}.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as file:
                try:
                    cloudpickle.dump(key, file, protocol=pickle.HIGHEST_PROTOCOL)
                    cloudpickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)
                except OSError:
                    raise
                except Exception as exc:
                    raise SerializationError(
                        f"the result of task {key!r} cannot be pickled into resultdir={self.path!r}: {exc}"
                    ) from exc
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())
            os.replace(temp, final)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        self._append_index(token, key)
        return ResultRef(final, key)

    def _append_index(self, token: str, key: object) -> None:
        shown = repr(key).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")  # one line, always
        with open(os.path.join(self.path, INDEX), "a+b") as index:
            start = b""
            if index.seek(0, os.SEEK_END) > 0:
                index.seek(-1, os.SEEK_END)
                if index.read(1) != b"\n":  # a torn last line: do not extend it
                    start = b"\n"
            index.write(start + f"{token}\t{shown}\n".encode("utf-8", "backslashreplace"))

    def index(self) -> dict[str, str]:
        """The index as ``{token: repr(key)}``: duplicates collapse, a torn or garbled line is skipped."""
        try:
            with open(os.path.join(self.path, INDEX), "rb") as file:
                lines = file.read().decode("utf-8", "replace").split("\n")
        except FileNotFoundError:
            return {}
        entries: dict[str, str] = {}
        for line in lines[:-1]:  # the part after the last newline is empty or torn
            token, tab, shown = line.partition("\t")
            if tab and _TOKEN.match(token):
                entries[token] = shown
        return entries

    def _files(self) -> list[str]:
        """The result files, sorted by token."""
        found = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix == _SUFFIX and _TOKEN.match(stem) and entry.is_file():
                    found.append(entry.path)
        return sorted(found)

    def keys(self) -> list[Any]:
        """The keys of every saved result, read from the ``.pkl`` files (in token order, stable)."""
        return [_read_key(path) for path in self._files()]

    def __len__(self) -> int:
        return len(self._files())
