"""Content digests of files and manifests of directories: what makes a cache hit or a resume trustworthy.

* :func:`file_digest`: the sha256 of a file's bytes. Hashing is memoised by ``(path, size, mtime_ns,
  ctime_ns, inode)``: a file whose stat is unchanged is not read again, any write changes ``ctime`` (which a
  user cannot set back), and a file changed within :data:`RACY_S` seconds of being hashed is never memoised
  (coarse file-system clocks could hide a second write in the same tick). :func:`use_memo` keeps the memo
  in a JSON file (the pipeline uses ``<output_root>/fingerprint-memo.json``) so that a later process does not
  hash a 14 GB checkpoint again to verify a cache hit; without it the memo lives in the process only.
* :func:`write_manifest` / :func:`check_manifest`: ``MANIFEST.json`` lists the size and sha256 of every file
  of a directory (or of the named parts of it). It is written *last*, after everything it describes, so a
  directory with an intact manifest is complete. Training checkpoints, stage-cache entries and eval-cache
  entries all use it.

Public API: :data:`MANIFEST`, :func:`use_memo`, :func:`save_memo`, :func:`file_digest`, :func:`tree_digest`,
:func:`write_manifest`, :func:`check_manifest`, :func:`manifest_digest`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from arc_lab.run.runinfo import write_json

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
#: files changed less than this many seconds before they were hashed are not memoised
RACY_S = 2.0
_CHUNK = 1 << 22

_memo: dict[str, list] = {}
_memo_file: Path | None = None
_memo_dirty = False


# ------------------------------------------------------------------------------------------- digests
def use_memo(path: str | Path | None) -> None:
    """Keep the digest memo in ``path`` (loaded now, written by :func:`save_memo`); None: in process only.

    An unreadable memo file is ignored (every file is then hashed again), never trusted in part.
    """
    global _memo_file
    _memo_file = Path(path) if path is not None else None
    if _memo_file is not None and _memo_file.is_file():
        try:
            loaded = json.loads(_memo_file.read_text())
            _memo.update({k: v for k, v in loaded.items() if isinstance(v, list) and len(v) == 5})
        except (OSError, ValueError, AttributeError) as e:
            log.warning("ignoring the unreadable digest memo %s (%s): files are hashed again", _memo_file, e)


def save_memo() -> None:
    """Write the memo to the :func:`use_memo` file if it gained entries (merged with what is there)."""
    global _memo_dirty
    if _memo_file is None or not _memo_dirty:
        return
    merged: dict[str, list] = {}
    try:
        merged = json.loads(_memo_file.read_text()) if _memo_file.is_file() else {}
    except (OSError, ValueError):
        merged = {}
    if not isinstance(merged, dict):
        merged = {}
    merged.update(_memo)
    merged = {k: v for k, v in merged.items() if os.path.exists(k)}  # forget deleted files
    try:
        write_json(_memo_file, merged)
        _memo_dirty = False
    except OSError as e:  # a memo that cannot be saved only costs hashing again
        log.warning("could not save the digest memo %s (%s)", _memo_file, e)


def _stat_key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes, memoised by its stat (see the module docstring).

    Raises:
        OSError: the file cannot be read.
    """
    global _memo_dirty
    path = Path(path).resolve()
    key = str(path)
    st = path.stat()
    stat = _stat_key(st)
    hit = _memo.get(key)
    if hit is not None and hit[:4] == stat:
        return hit[4]
    start_ns = time.time_ns()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    after = path.stat()
    newest = max(after.st_mtime_ns, after.st_ctime_ns)
    if _stat_key(after) == stat and newest < start_ns - int(RACY_S * 1e9):
        _memo[key] = [*stat, digest]
        _memo_dirty = True
    return digest


def _files_under(root: Path, parts: Iterable[str] | None) -> list[str]:
    """Relative names (posix) of the regular files of ``root`` (or of its ``parts``), sorted; the manifest,
    hidden files (locks, temporaries) and hidden folders are left out."""
    tops = [root / p for p in parts] if parts is not None else [root]
    out = []
    for top in tops:
        if top.is_file():
            out.append(top.relative_to(root).as_posix())
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                rel = (Path(dirpath) / name).relative_to(root).as_posix()
                if not name.startswith(".") and rel != MANIFEST:
                    out.append(rel)
    return sorted(out)


def tree_digest(root: str | Path) -> str:
    """sha256 over the names and :func:`file_digest` of every file under ``root`` (a model directory)."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in _files_under(root, None):
        h.update(f"{rel}\0{file_digest(root / rel)}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- manifests
def write_manifest(directory: str | Path, parts: Iterable[str] | None = None) -> dict[str, Any]:
    """Write ``<directory>/MANIFEST.json``: size and sha256 of every file (of ``parts``, when given:
    files or folders relative to ``directory``). Call it after everything else is written.

    Returns:
        The manifest.
    """
    directory = Path(directory)
    parts = list(parts) if parts is not None else None
    files = {}
    for rel in _files_under(directory, parts):
        path = directory / rel
        files[rel] = {"size": path.stat().st_size, "sha256": file_digest(path)}
    manifest = {"version": 1, "parts": parts, "files": files}
    write_json(directory / MANIFEST, manifest)
    return manifest


def _read_manifest(directory: Path) -> tuple[dict | None, str | None]:
    path = directory / MANIFEST
    if not path.is_file():
        return None, f"no {MANIFEST} (never finished, or written before manifests existed)"
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    return manifest, None


def check_manifest(directory: str | Path) -> list[str]:
    """What is wrong with ``directory`` against its manifest: missing, resized, changed or unexpected files.

    Returns:
        One line per problem (the first few of many), empty when the directory is intact.
    """
    directory = Path(directory)
    manifest, problem = _read_manifest(directory)
    if problem or manifest is None:
        return [problem or f"no {MANIFEST}"]
    problems = []
    for rel, entry in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(f"{rel}: {size} bytes, the manifest says {entry.get('size')}")
        elif file_digest(path) != entry.get("sha256"):
            problems.append(f"{rel}: content differs from the manifest (sha256)")
    extra = sorted(set(_files_under(directory, manifest.get("parts"))) - set(manifest["files"]))
    problems += [f"{rel}: not in the manifest" for rel in extra]
    return problems if len(problems) <= 5 else [*problems[:5], f"... and {len(problems) - 5} more"]


def manifest_digest(directory: str | Path, part: str = "") -> str:
    """Short digest of the manifest entries under ``part`` (e.g. ``model``): identifies that content."""
    manifest, problem = _read_manifest(Path(directory))
    if problem or manifest is None:
        raise FileNotFoundError(f"{directory}: {problem}")
    prefix = f"{part}/" if part else ""
    rows = sorted((k, v["sha256"]) for k, v in manifest["files"].items() if k.startswith(prefix))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:12]
