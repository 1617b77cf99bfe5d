"""Read a W&B offline run file (``run-<id>.wandb``) without uploading it.

wandb 0.31 has no public reader for offline runs (``wandb sync --view`` is gone), yet tests and
post-hoc checks want to see what a run recorded. The format (written by ``wandb-core``):

* a 7-byte file header: ``b":W&B"``, the magic ``0xBEE1`` (uint16, little endian) and a version byte (0);
* then a LevelDB log (https://github.com/google/leveldb/blob/main/doc/log_format.md): the file is cut
  into 32 KiB blocks (the header counts towards the first block); each record fragment has a 7-byte
  header ``checksum:uint32 length:uint16 type:uint8`` (little endian) followed by ``length`` bytes;
  types FULL=1, FIRST=2, MIDDLE=3, LAST=4 reassemble records that span blocks; a block tail shorter
  than 7 bytes is zero padding. Unlike LevelDB, the checksum is a plain CRC-32 (zlib/IEEE, not CRC-32C,
  not masked) over the type byte followed by the data (checked against wandb 0.31 output);
* each record is a serialized ``wandb.proto.wandb_internal_pb2.Record``: ``run`` (id, project, group,
  display name, initial config), ``config`` updates, ``history`` rows, incremental ``summary``
  updates, ``exit`` and many others (telemetry, stats, files) that this reader skips.

Usage::

    run = read_offline_run("outputs/.../wandb/offline-run-20261125_125243-abc123")
    run.history[-1]["train/loss"], run.summary["eval/acc"], run.config["stage.optim.lr"], run.group
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version: 7 bytes
RECORD_HEADER = struct.Struct("<IHB")  # crc32, length, type: 7 bytes
BLOCK_SIZE = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
#: keys W&B adds for itself; dropped from config and summary
INTERNAL_KEYS = ("_wandb",)


class OfflineRunError(ValueError):
    """The file is not a W&B offline run file or is corrupt; the message gives the file and offset."""


class TruncatedFile(OfflineRunError):
    """The file ends inside a record (a run still writing, or killed mid-write)."""


@dataclass
class OfflineRun:
    """What an offline run recorded.

    Attributes:
        path: the ``run-<id>.wandb`` file.
        run_id, project, entity, group, name, job_type: from the run record ("" when unset).
        config: the final config (initial config plus later updates), keys as logged (flat for arc_lab).
        history: one dict per ``log`` call, including W&B's ``_step``, ``_runtime`` and ``_timestamp``.
        summary: the final summary after all incremental updates (``_wandb`` dropped).
        exit_code: the exit record's code, or None when the run did not finish.
        truncated: the file ended inside a record (a run still writing, or killed).
    """

    path: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    name: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    truncated: bool = False


# ---------------------------------------------------------------------------------------- low level
def _check_file_header(data: bytes, path: Path) -> int:
    """Validate the 7-byte header; returns the version."""
    if len(data) < FILE_HEADER.size:
        raise OfflineRunError(f"{path}: {len(data)} bytes, too short for the W&B file header")
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise OfflineRunError(f"{path}: not a W&B run file (header {data[:7]!r}, expected b':W&B' + 0xBEE1)")
    if version != 0:
        raise OfflineRunError(f"{path}: W&B file format version {version} is not supported (only 0)")
    return version


def iter_record_bytes(path: str | Path) -> Iterator[bytes]:
    """Yield the payload of each logical record of a LevelDB-log file with the W&B header.

    A truncated tail raises :class:`TruncatedFile` *after* every complete record was yielded.

    Raises:
        OfflineRunError: bad header, bad checksum or bad fragment sequence (with the byte offset).
        TruncatedFile: the file ends inside a record.
    """
    path = Path(path)
    data = path.read_bytes()
    _check_file_header(data, path)
    pos = FILE_HEADER.size
    pending: bytearray | None = None  # fragments of a FIRST..LAST record
    while pos < len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:  # trailer padding
            pos += left_in_block
            continue
        if pos + RECORD_HEADER.size > len(data):
            raise TruncatedFile(f"{path}: file ends inside a record header at byte {pos}")
        crc, length, rtype = RECORD_HEADER.unpack_from(data, pos)
        start, end = pos + RECORD_HEADER.size, pos + RECORD_HEADER.size + length
        if crc == 0 and length == 0 and rtype == 0:  # zero-filled (preallocated) rest of block
            pos += left_in_block
            continue
        if end > len(data):
            raise TruncatedFile(f"{path}: file ends inside a record at byte {pos} ({length} bytes announced)")
        chunk = data[start:end]
        if zlib.crc32(chunk, zlib.crc32(bytes([rtype]))) != crc:
            raise OfflineRunError(f"{path}: checksum mismatch in the record at byte {pos}")
        pos = end
        step = _assemble(pending, rtype, chunk, path, pos)
        if isinstance(step, tuple):  # a complete record
            yield step[0]
            pending = None
        else:
            pending = step
    if pending is not None:
        raise TruncatedFile(f"{path}: file ends inside a multi-block record")


def _assemble(
    pending: bytearray | None, rtype: int, chunk: bytes, path: Path, pos: int
) -> bytearray | tuple[bytes] | None:
    """One step of FULL/FIRST/MIDDLE/LAST reassembly: returns new pending bytes or ``(record,)``."""
    if rtype == FULL and pending is None:
        return (chunk,)
    if rtype == FIRST and pending is None:
        return bytearray(chunk)
    if rtype == MIDDLE and pending is not None:
        pending.extend(chunk)
        return pending
    if rtype == LAST and pending is not None:
        return (bytes(pending + chunk),)
    raise OfflineRunError(
        f"{path}: unexpected fragment type {rtype} before byte {pos} "
        f"({'inside' if pending is not None else 'outside'} a multi-block record)"
    )


def iter_records(path: str | Path) -> Iterator[Any]:
    """Yield each ``wandb_internal_pb2.Record`` of an offline run file (raises on a truncated tail)."""
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in iter_record_bytes(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        yield rec


# --------------------------------------------------------------------------------------- high level
def _item_key(item: Any) -> list[str]:
    """W&B items carry either ``key`` or ``nested_key`` (a path into nested dicts)."""
    return [item.key] if item.key else list(item.nested_key)


def _set(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = value


def _remove(target: dict[str, Any], keys: list[str]) -> None:
    for k in keys[:-1]:
        target = target.get(k, {})
    target.pop(keys[-1], None)


def _history_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    return getattr(item, kind) if kind and kind != "none" else None


def _apply_updates(target: dict[str, Any], record: Any) -> None:
    """Apply a ConfigRecord / SummaryRecord (``update`` and ``remove`` items) to ``target``."""
    for item in record.update:
        _set(target, _item_key(item), json.loads(item.value_json))
    for item in record.remove:
        _remove(target, _item_key(item))


def resolve_run_file(path: str | Path) -> Path:
    """Accept a ``run-<id>.wandb`` file or an ``offline-run-*`` directory holding exactly one."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("run-*.wandb"))
        if len(found) != 1:
            raise OfflineRunError(f"{path}: expected one run-*.wandb file, found {[f.name for f in found]}")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such W&B run file or directory")
    return path


def find_offline_runs(root: str | Path) -> list[Path]:
    """Every ``run-*.wandb`` file under ``root`` (e.g. a run folder), sorted by path."""
    return sorted(Path(root).rglob("offline-run-*/run-*.wandb"))


def read_offline_run(path: str | Path) -> OfflineRun:
    """Replay an offline run file into run metadata, config, history rows and the final summary.

    Args:
        path: a ``run-<id>.wandb`` file or its ``offline-run-*`` directory.

    Raises:
        OfflineRunError: not a W&B file, or corrupt. A truncated tail is not an error: the complete
            records are returned with ``truncated=True`` (and a warning is logged).
    """
    run = OfflineRun(path=resolve_run_file(path))
    try:
        for rec in iter_records(run.path):
            _apply_record(run, rec)
    except TruncatedFile as e:
        log.warning("%s; returning the complete records before it", e)
        run.truncated = True
    for key in INTERNAL_KEYS:
        run.config.pop(key, None)
        run.summary.pop(key, None)
    return run


def _apply_record(run: OfflineRun, rec: Any) -> None:
    kind = rec.WhichOneof("record_type")
    if kind == "run":
        r = rec.run
        run.run_id, run.project, run.entity = r.run_id, r.project, r.entity
        run.group, run.name, run.job_type = r.run_group, r.display_name, r.job_type
        _apply_updates(run.config, r.config)
        _apply_updates(run.summary, r.summary)
    elif kind == "config":
        _apply_updates(run.config, rec.config)
    elif kind == "history":
        row: dict[str, Any] = {}
        for item in rec.history.item:
            _set(row, _item_key(item), _history_value(item))
        run.history.append(row)
    elif kind == "summary":
        _apply_updates(run.summary, rec.summary)
    elif kind == "exit":
        run.exit_code = rec.exit.exit_code
