"""Hash many files at once: threads, the stat cache, and a compact answer. Never imports torch.

`hash_tree` is what `hashing.hash_files` runs; `hashfile` reads each file. It is built for a million files:

- one `lstat` per file, taken by the walk (`walk.locate_patterns`) or, for a
  list of paths, folder by folder (`locate`); nothing stats a file again but the
  one `fstat` of the descriptor it is read through (`hashfile.read_beneath`);
- the stat cache is asked in sorted path order, a range of rows at a time, and
  compares a range's stat keys in bulk (`hashcache.HashCache.lookup`);
- files that must be read go to a small thread pool in batches of one folder's
  files (hashlib and the reads release the GIL, so every core hashes); each
  batch opens its folder once beneath the root (`repro.safeio.Beneath`: no link
  followed) and every file relative to it, into the thread's reused buffer, and
  the main thread files their digests in the stat cache while the pool keeps reading;
- the answer is columnar (`TreeDigests`): the paths as given, then 8 bytes of size,
  40 of stat key and 32 of sha256 per file, so a million files cost about 150 MB
  with their names, not a few hundred objects each.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypedDict

from repro.environment.machine import machine_cores
from repro.errors import DataError
from repro.safeio import Beneath
from repro.source.algorithms import check_algorithms
from repro.source.filetree import os_reason
from repro.source.hashfile import CHUNK, MAX_HASHED_BYTES, FileDigest, check_cap, read_beneath
from repro.source.locate import locate
from repro.source.statkey import KEY_SIZE, STAT_KEY
from repro.source.walk import Located

if TYPE_CHECKING:
    from concurrent.futures import Future

BATCH_FILES, BATCH_BYTES = 64, 8 << 20  # one pool task: up to 64 small files or 8 MiB
STORE_EVERY = 4096  # digests filed in the stat cache per transaction
SHA = 32  # bytes of a sha256 digest


class Progress(Protocol):
    """Receives bytes and finished files from worker threads; must be thread-safe."""

    def start(self, total_bytes: int, total_files: int) -> None: ...

    def advance(self, nbytes: int, nfiles: int) -> None: ...


class StatCache(Protocol):
    """Digests remembered by (absolute path, packed stat key); `repro.source.hashcache.HashCache` is one."""

    def lookup(self, base: str, rels: Sequence[str], order: Sequence[int], keys: bytes | bytearray,
               algorithms: Sequence[str]) -> Iterator[tuple[Sequence[int], bytes, list[str] | None]]: ...

    def put(self, rows: Iterable[tuple[str, bytes, int, bytes, str]]) -> None: ...


@dataclass
class TreeDigests:
    """Every file's size and digests, in the order of `paths`; `file(i)` is one as a FileDigest."""

    paths: Sequence[str]
    sizes: array  # type: ignore[type-arg]  # array('q')
    sha256: bytearray  # SHA bytes a file
    extra: list[str] | None  # per file "alg=hex;..." (sorted names), when algorithms beyond sha256 were asked

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, i: int) -> FileDigest:
        pairs: tuple[tuple[str, str], ...] = ()
        if self.extra is not None and self.extra[i]:
            pairs = tuple(tuple(item.split("=", 1)) for item in self.extra[i].split(";"))  # type: ignore[misc]
        return FileDigest(self.paths[i], self.sizes[i], self.sha256[i * SHA : (i + 1) * SHA].hex(), pairs)

    def __iter__(self) -> Iterator[FileDigest]:
        return (self.file(i) for i in range(len(self.paths)))

    def listing(self, shown: Callable[[str], str] | None = None, per_chunk: int = 8192
                ) -> Iterator[tuple[bytes, bytes]]:
        """The `sha256sum` lines that define the root digest, sorted by path, in chunks of bytes.

        Each chunk comes twice: as hashed, and with each path passed through `shown`
        (for a terminal: `safeio.printable`); the same object when nothing needed escaping.
        """
        order = sorted_order(self.paths)
        sha, paths = self.sha256, self.paths
        for start in range(0, len(order), per_chunk):
            part = order[start : start + per_chunk]
            raw = "".join([f"{sha[i * SHA : (i + 1) * SHA].hex()}  {paths[i]}\n" for i in part]).encode()
            if shown is None or "".join([paths[i] for i in part]).isprintable():
                yield raw, raw
            else:
                text = "".join([f"{sha[i * SHA : (i + 1) * SHA].hex()}  {shown(paths[i])}\n" for i in part])
                yield raw, text.encode()

    def root_digest(self, out: BinaryIO | None = None, shown: Callable[[str], str] | None = None) -> str:
        """`hashing.root_digest` of these files, without making a FileDigest each.

        With `out`, the `sha256sum` lines it is computed from are written there too
        (paths through `shown`, if given).
        """
        import hashlib

        h = hashlib.sha256()
        for raw, text in self.listing(shown if out is not None else None):
            h.update(raw)
            if out is not None:
                out.write(text)
        return h.hexdigest()

    def block_json(self) -> Iterator[bytes]:
        """`canonical_json({"files": [...], "root_digest": ...})`, the lock's block, in chunks.

        The same bytes (tests compare them), written a few thousand files at a time.
        """
        import json

        def entry(i: int) -> str:
            f = self.file(i)
            hashes = ",\n".join(f'        {json.dumps(a)}: "{d}"' for a, d in sorted(f.hashes.items()))
            return (f'    {{\n      "hashes": {{\n{hashes}\n      }},\n      "path": '
                    f'{json.dumps(f.path, ensure_ascii=False)},\n      "size": {f.size}\n    }}')

        n = len(self.paths)
        yield b'{\n  "files": [' + (b"\n" if n else b"")
        for start in range(0, n, 4096):
            text = ",\n".join([entry(i) for i in range(start, min(n, start + 4096))])
            yield (text + (",\n" if start + 4096 < n else "\n")).encode()
        yield f'{"  " if n else ""}],\n  "root_digest": "{self.root_digest()}"\n}}\n'.encode()


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a million paths, stats and cache rows stream past.

    They form no cycles (reference counting frees them), yet the collector's passes
    over the rows cost 5-10% of the stat-cache lookup at a million files (measured).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def default_workers() -> int:
    """One thread per usable core plus one, so a core is busy while another thread is in a syscall."""
    return max(1, min(16, machine_cores() + 1))


def sorted_order(paths: Sequence[str]) -> Sequence[int]:
    """Indices of `paths` sorted by UTF-8 bytes (which is Python's str order for valid UTF-8)."""
    as_list = paths if isinstance(paths, list) else list(paths)
    if sorted(as_list) == as_list:  # already sorted (a walk's or a lock's list): n compares, in C
        return range(len(paths))
    return sorted(range(len(paths)), key=paths.__getitem__)


def _folder(rel: str) -> str:
    return rel[: rel.rfind("/") + 1]


def _batches(todo: Sequence[int], sizes: array, rels: Sequence[str]  # type: ignore[type-arg]
             ) -> Iterator[Sequence[int]]:
    """Group file indices into pool tasks: big files alone, small ones together, one folder per task."""
    begin, nbytes, folder = 0, 0, None
    for pos, i in enumerate(todo):
        here = _folder(rels[i])
        if pos > begin and (pos - begin >= BATCH_FILES or nbytes + sizes[i] > BATCH_BYTES or here != folder):
            yield todo[begin:pos]
            begin, nbytes = pos, 0
        nbytes += sizes[i]
        folder = here
    if begin < len(todo):
        yield todo[begin:]


class _Cancelled(Exception):
    """Another file failed (or Ctrl-C): stop reading."""


class _Run:
    """The state of one `hash_tree` call that its worker threads share."""

    def __init__(self, root: Path, rels: Sequence[str] | Located, algos: tuple[str, ...],
                 progress: Progress | None, on_file: Callable[[FileDigest], None] | None) -> None:
        paths = rels.paths if isinstance(rels, Located) else rels
        self.base, self.rels, self.algos = str(root), paths, algos
        if isinstance(rels, Located) and rels.keys is not None:  # the walk took every file's stat already
            self.keys, self.sizes = rels.keys, rels.sizes
        else:
            self.keys, self.sizes = locate(self.base, paths)
        n = len(paths)
        self.out = TreeDigests(paths, self.sizes, bytearray(SHA * n), [""] * n if len(algos) > 1 else None)
        self.progress, self.on_file = progress, on_file
        self.stop = threading.Event()  # set on the first error or Ctrl-C: other threads stop mid-file
        self.opener: Beneath  # opened by hash_tree, only when some file must be read

    def cached(self, cache: StatCache) -> bytearray:
        """Fill in what the stat cache knows; a 0/1 flag per file."""
        done = bytearray(len(self.rels))
        sha, extra, wanted = self.out.sha256, self.out.extra, set(self.algos)
        for hit, digests, more in cache.lookup(self.base, self.rels, sorted_order(self.rels), self.keys, self.algos):
            if isinstance(hit, range) and hit.step == 1:  # a whole range in order: two slice assignments
                sha[hit.start * SHA : hit.stop * SHA] = digests
                done[hit.start : hit.stop] = b"\1" * len(hit)
            else:
                for n, i in enumerate(hit):
                    sha[i * SHA : (i + 1) * SHA] = digests[n * SHA : (n + 1) * SHA]
                    done[i] = 1
            if extra is not None and more is not None:  # only what was asked for, though the row may know more
                for i, known in zip(hit, more, strict=True):
                    extra[i] = ";".join(item for item in known.split(";") if item.partition("=")[0] in wanted)
            if self.on_file is not None:
                for i in hit:
                    self.on_file(self.out.file(i))
        return done

    def _on_big(self, n: int) -> None:
        if self.stop.is_set():
            raise _Cancelled
        if self.progress is not None:
            self.progress.advance(n, 0)

    def hash_batch(self, batch: Sequence[int]) -> Sequence[int]:
        """Read and hash these files, all in one folder (in a worker thread); their digests land in the arrays."""
        big = len(batch) == 1 and self.sizes[batch[0]] >= CHUNK
        sha, extra, progress, keys, rels, algos = self.out.sha256, self.out.extra, self.progress, self.keys, \
            self.rels, self.algos
        on_bytes = self._on_big if big else None
        folder = _folder(rels[batch[0]])
        skip = len(folder)
        try:
            folder_fd = self.opener.folder(folder)
        except OSError as exc:
            raise DataError(f"{rels[batch[0]]}: {os_reason(exc)}") from None
        try:
            for i in batch:
                if self.stop.is_set():
                    raise _Cancelled
                at = i * KEY_SIZE
                size, hashers, key = read_beneath(self.opener, folder_fd, folder, rels[i][skip:],
                                                  keys[at : at + KEY_SIZE], algos, on_bytes)
                sha[i * SHA : (i + 1) * SHA] = hashers[0].digest()
                keys[at : at + KEY_SIZE] = key  # the stat that held while it was read
                self.sizes[i] = size
                if extra is not None:
                    # check_algorithms keeps the names after sha256 sorted
                    extra[i] = ";".join(f"{a}={h.hexdigest()}" for a, h in zip(algos[1:], hashers[1:], strict=True))
                if progress is not None:
                    progress.advance(0 if big else size, 1)
                if self.on_file is not None:
                    self.on_file(self.out.file(i))
        finally:
            os.close(folder_fd)
        return batch

    def rows(self, done: Sequence[int], started_ns: int) -> Iterator[tuple[str, bytes, int, bytes, str]]:
        """Stat-cache rows for freshly hashed files (a million of them on a cold run: no call per field)."""
        keys, sha, extra, base, rels, unpack = self.keys, self.out.sha256, self.out.extra, self.base, self.rels, \
            STAT_KEY.unpack_from
        for i in done:
            at = i * KEY_SIZE
            mtime_ns, ctime_ns = unpack(keys, at)[3:]
            # margin_ns, as hashcache.margin computes it: how long before hashing began the file last changed
            yield (f"{base}/{rels[i]}", bytes(keys[at : at + KEY_SIZE]), started_ns - max(mtime_ns, ctime_ns),
                   bytes(sha[i * SHA : (i + 1) * SHA]), extra[i] if extra is not None else "")


class HashOptions(TypedDict, total=False):
    """How `hash_tree` reads (see `hashing.hash_files`): what a caller may pass on by keyword."""

    algorithms: Sequence[str]
    cache: StatCache | None
    rehash: bool
    progress: Progress | None
    on_file: Callable[[FileDigest], None] | None


def hash_tree(
    root: Path,
    rel_paths: Sequence[str] | Located,
    workers: int | None = None,
    *,
    algorithms: Sequence[str] = ("sha256",),
    cache: StatCache | None = None,
    rehash: bool = False,
    progress: Progress | None = None,
    on_file: Callable[[FileDigest], None] | None = None,
) -> TreeDigests:
    """Hash many files under `root` (see `hashing.hash_files`, which lists this answer).

    `rel_paths` may be what `walk.locate_patterns` found, stats included: then no file is stat'ed twice.
    """
    started_ns = time.time_ns()
    with gc_paused():
        run = _Run(Path(root), rel_paths, check_algorithms(algorithms), progress, on_file)
        done = run.cached(cache) if cache is not None and not rehash else bytearray(len(run.rels))
        todo = array("q", (i for i, d in enumerate(done) if not d)) if done.count(0) else array("q")
        del done
    if len(todo) and max(run.sizes) > MAX_HASHED_BYTES:  # refused before a byte is read
        big = max(todo, key=run.sizes.__getitem__)
        check_cap(run.rels[big], run.sizes[big])
    if progress is not None:
        progress.start(sum(run.sizes[i] for i in todo), len(todo))
    pending: list[int] = []

    def finished(batch: Sequence[int], last: bool = False) -> None:
        pending.extend(batch)
        if cache is not None and pending and (last or len(pending) >= STORE_EVERY):
            cache.put(run.rows(pending, started_ns))
            pending.clear()

    if len(todo):
        with Beneath(run.base) as run.opener:
            batches = _batches(todo, run.sizes, run.rels)
            nthreads = workers or default_workers()
            if len(todo) <= BATCH_FILES or nthreads == 1:
                for b in batches:
                    finished(run.hash_batch(b))
            else:
                _pool(run, batches, nthreads, finished)
    finished((), last=True)
    return run.out


def _pool(run: _Run, batches: Iterator[Sequence[int]], nthreads: int,
          finished: Callable[[Sequence[int]], None]) -> None:
    """Hash the batches on `nthreads` threads, a bounded window of them queued at a time."""
    from concurrent.futures import ThreadPoolExecutor  # only when files must be read: a re-check never needs it

    window: deque[Future[Sequence[int]]] = deque()
    with ThreadPoolExecutor(max_workers=nthreads) as pool:
        try:
            for batch in batches:
                window.append(pool.submit(run.hash_batch, batch))
                if len(window) >= 4 * nthreads:
                    finished(window.popleft().result())
            while window:
                finished(window.popleft().result())
        except BaseException:
            run.stop.set()
            for f in window:
                f.cancel()
            raise

