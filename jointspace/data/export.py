"""``jointspace data export``: a manifest (and the files it names) → WebDataset or Parquet shards.

Files are copied byte for byte (a corrupt image stays corrupt, so a stream
quarantines exactly what the manifest reader would); a row whose file is
missing cannot be exported and is listed in ``export-quarantine.jsonl`` with
its reason. Keys are the manifest ids with ``.`` and ``/`` replaced (WebDataset
splits a member name at its first dot), made unique with a suffix where two
ids would meet (``a.b`` and ``a_b``); the original id is kept as metadata.
Every registered modality with a column in the manifest is exported: a file
under the member extension its plug-in names (:meth:`~jointspace.modalities.Modality.shard_member`:
its own suffix when the shard readers know it, else ``KEY.<modality>`` —
``KEY.image`` for a ``.gif``, ``KEY.audio`` for an ``.mp3`` …), a value (a
text …) as UTF-8 under its plug-in's first shard key (``KEY.txt``). The
output folder must hold no shards yet: old ones would be read with the new.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import DataError
from ..modalities import MODALITIES, Modality
from ..progress import logger, progress
from .manifest import manifest_columns, read_manifest
from .shards import ShardWriter


def export_modalities(header: Sequence[str], columns: Mapping[str, str] | None = None) -> list[str]:
    """The registered modalities a manifest with columns ``header`` holds (``columns`` maps a
    modality to its column), file modalities first, each group in the manifest's column
    order: the first is the one every exported row must have."""
    mapped = {**{m: m for m in MODALITIES.names()}, **(columns or {})}
    present = [m for m in MODALITIES.names() if mapped[m] in header]
    return sorted(present, key=lambda m: (not MODALITIES.get(m).is_file, header.index(mapped[m])))


def _member(plugin: Modality) -> str:
    """The member extension a value (not a file) of ``plugin`` is exported under."""
    return plugin.shard_keys[0] if plugin.shard_keys else plugin.name


@dataclass
class ExportReport:
    shards: list[Path]
    samples: int
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def export_manifest(manifest: str | Path, out: str | Path, *, format: str = "webdataset",
                    shard_size: int = 1000, columns: Mapping[str, str] | None = None) -> ExportReport:
    """Write the rows of ``manifest`` as shards of ``shard_size`` samples into ``out``."""
    manifest, out = Path(manifest), Path(out)
    present = export_modalities(manifest_columns(manifest), columns)
    if not present:
        raise DataError(f"manifest {manifest} has no column of a registered modality "
                        f"({', '.join(MODALITIES.names())})")
    data = read_manifest(manifest, required=(present[0],), optional=tuple(present[1:]),
                         check_files=False, columns=columns)
    writer = ShardWriter(out, format, shard_size)
    skipped = [(b.line, b.reason) for b in data.bad_rows]
    count = 0
    keys: set[str] = set()
    for record in progress(data.records, desc=f"export {manifest.name}", unit="row"):
        items, problem = {}, None
        for modality in present:
            value = record.fields.get(modality)
            if value is None or value == "":
                continue
            plugin = MODALITIES.get(modality)
            if not plugin.is_file:
                items[modality] = (_member(plugin), str(value))
                continue
            path = value if Path(value).is_absolute() or modality == present[0] \
                else manifest.parent / value
            try:
                items[modality] = (plugin.shard_member(path), Path(path).read_bytes())
            except OSError:
                problem = f"{modality} file not found: {path}"
                break
        if problem:
            skipped.append((record.line, problem))
            continue
        meta = {"id": record.id, **({"label": record.label} if record.label else {}),
                **({"group": record.group} if record.group else {})}
        key = base = re.sub(r"[./\\\\]", "_", record.id)
        n = 1
        while key in keys:  # two ids that differ only where the key cannot (a.b, a_b)
            n += 1
            key = f"{base}_{n}"
        keys.add(key)
        writer.add(key, items, meta)
        count += 1
    writer.flush()
    if skipped:
        with open(out / "export-quarantine.jsonl", "w", encoding="utf-8") as f:
            for line, reason in skipped:
                f.write(json.dumps({"manifest": str(manifest), "line": line, "reason": reason}) + "\n")
        logger.warning("%s: %d rows not exported (see %s)", manifest, len(skipped),
                       out / "export-quarantine.jsonl")
    return ExportReport(writer.written, count, skipped)


__all__ = ["ExportReport", "export_manifest", "export_modalities"]
