"""Bulk embedding: a source of any size → Parquet parts of (key, vector, metadata).

The work is cut into *units*: one per shard of a shard source, or one per
``part_size`` rows of a manifest. Ray Data hands the units to a pool of actors,
each holding the model once; an actor reads its unit, decodes and checks each
item (bad ones are listed in the part's quarantine file, never fatal), embeds
the good ones and writes ``part-NNNNN.parquet`` under a temporary name, renamed
when complete. A re-run skips every part already written, so a killed job
resumes where it stopped, and redoes only the parts whose input changed
(``embed.json`` records each part's input and its identity: a shard's size,
mtime, ctime and inode, a manifest part's rows); a folder made by another model,
or from other inputs, is refused. A part's quarantine file is written (or an old
one removed) before the part: a part that exists has the quarantine of its own
input; quarantine files of parts beyond the input are removed.

Without ``ray_address`` a local Ray starts on this machine; with one, the same
code runs on that cluster (``out`` and the data must then be on storage every
node sees). Without Ray installed (``pip install 'jointspace[ray]'`` adds it) the
units run one after another in this process, by the same :func:`embed_unit`, into
the same parts. ``jointspace index`` ingests the parts without encoding again.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import DataError, JointspaceError
from .extras import install_hint, installed, require
from .fileio import atomic_path, atomic_write_json, atomic_write_text
from .progress import logger

#: "text": the column of each item's caption in the parts (what ``index`` reads into the
#: catalog's text field); "image": ``embed``'s documented default modality
USER_FACING_DEFAULTS = ("text", "image")
CAPTION = "text"
INFO_FILE = "embed.json"


@dataclass
class EmbedReport:
    out: Path
    parts: int
    written: int  # parts made by this run (the others were already there)
    items: int
    quarantined: int
    seconds: float
    startup_seconds: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: inputs of the parts redone because their input changed since they were written
    redone: list[str] = field(default_factory=list)
    #: parts removed because the manifest has fewer rows now
    removed: int = 0


def units_of(source: str | Path, modality: str, part_size: int) -> tuple[list[dict[str, Any]], list]:
    """The work units of a source, and the rows its reader rejected (a manifest's bad rows).

    A shard is one unit; a manifest's valid rows are cut into units of ``part_size``
    that carry their rows (id, item, text, label), so no actor re-reads the manifest."""
    from .data.shards import is_shard_source, list_shards

    if is_shard_source(source):
        # absolute: the parts' ``source`` column is where a server later reads each member
        # from, whatever folder it is started in
        return [{"part": i, "kind": "shard", "input": str(Path(s).resolve()), "rows": []}
                for i, s in enumerate(list_shards(source))], []
    path = Path(source)
    if not path.is_file():
        raise DataError(f"embed source not found: {source}")
    from .data.manifest import read_manifest

    captions = _caption_fields(modality)
    manifest = read_manifest(path, required=(modality,), optional=captions, check_files=False)
    rows = [{"key": r.id, "item": str(r.fields[modality]), "label": r.label,
             CAPTION: _caption(r.fields, captions)} for r in manifest.records]
    units = [{"part": i, "kind": "manifest", "input": str(path.resolve()), "rows": rows[s:s + part_size]}
             for i, s in enumerate(range(0, len(rows), part_size))]
    return units, [{"key": f"line {b.line}", "reason": b.reason, "input": str(path)}
                   for b in manifest.bad_rows]


def _caption_fields(modality: str) -> tuple[str, ...]:
    """The text-like modalities other than the one embedded: an item's caption comes from them."""
    from .modalities import MODALITIES

    return tuple(n for n in MODALITIES.names() if n != modality and MODALITIES.get(n).text_like)


def _caption(fields: dict[str, Any], captions: Sequence[str]) -> str | None:
    return next((fields[f] for f in captions if isinstance(fields.get(f), str)), None)


def units_signature(units: Sequence[dict[str, Any]]) -> str:
    """A hash of what each part holds: its shard (path and size) or its manifest rows
    (what ``embed.json`` recorded before it recorded each part: such a folder is matched
    by it)."""
    import hashlib

    digest = hashlib.sha256()
    for unit in units:
        size = Path(unit["input"]).stat().st_size if unit["kind"] == "shard" and \
            Path(unit["input"]).is_file() else None
        digest.update(json.dumps([unit["part"], unit["input"], size,
                                  [[r["key"], r["item"], r[CAPTION], r["label"]] for r in unit["rows"]]],
                                 ensure_ascii=False).encode())
    return digest.hexdigest()[:32]


def unit_identity(unit: dict[str, Any]) -> str:
    """What one part holds, as a hash: its shard's path and ``stat`` identity — size,
    mtime, ctime and inode — (a re-read of every shard to hash its bytes would cost as
    much as embedding it), or its manifest rows (key, item, text, label). A shard
    replaced by another file (a new inode: ``mv``, an atomic rewrite) or written in place
    (a new ctime: no tool sets it back, as ``tar`` or ``touch -d`` set the mtime) is
    noticed whatever its size and mtime; a ``chmod`` or a copy of a shard redoes its part
    too, for nothing. A manifest row's file changed in place is not noticed: delete its
    part."""
    import hashlib

    stat = None
    if unit["kind"] == "shard" and Path(unit["input"]).is_file():
        found = Path(unit["input"]).stat()
        stat = [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino]
    rows = [[r["key"], r["item"], r[CAPTION], r["label"]] for r in unit["rows"]]
    return hashlib.sha256(json.dumps([unit["input"], stat, rows], ensure_ascii=False).encode()
                          ).hexdigest()[:32]


def _part(out: Path, number: int) -> Path:
    return out / f"part-{number:05d}.parquet"


def _quarantine(out: Path, number: int) -> Path:
    return out / f"quarantine-{number:05d}.jsonl"


def _drop_part(out: Path, number: int) -> None:
    """Remove a part and its quarantine (the part first: a part that exists is complete;
    a kill in between leaves a quarantine without its part, which :func:`embed_unit`
    replaces or removes before it writes the part again)."""
    _part(out, number).unlink(missing_ok=True)
    _quarantine(out, number).unlink(missing_ok=True)


def _sweep_quarantines(out: Path, parts: int) -> list[Path]:
    """Remove the part quarantine files numbered beyond ``parts`` (their parts were
    removed, or never written: a kill between the two, a manifest with fewer rows now)."""
    swept = []
    for path in out.glob("quarantine-*.jsonl"):
        number = path.stem.split("-", 1)[1]
        if number.isdigit() and int(number) >= parts and not _part(out, int(number)).is_file():
            path.unlink(missing_ok=True)
            swept.append(path)
    return swept


def _records(out: Path, info: dict[str, Any], units: Sequence[dict[str, Any]], part_size: int,
             source: str | Path) -> dict[str, dict[str, Any]]:
    """The per-part records of an existing folder, refusing one whose parts cannot be
    matched to ``units`` by number (other shards, another manifest or --part-size)."""
    if "parts" not in info:
        if "units" not in info:
            if any(out.glob("part-*.parquet")):
                raise JointspaceError(f"{out} was made before jointspace recorded what each part "
                                      "holds, so its parts cannot be matched to this input: use a new --out")
            return {}
        if info["units"] != units_signature(units):
            raise _other_input(out, info)
        # made before per-part records, from this very input: its parts are current
        return {str(u["part"]): {"input": u["input"], "identity": unit_identity(u)} for u in units}
    records: dict[str, dict[str, Any]] = info["parts"]
    kinds = {u["kind"] for u in units}
    if info.get("kind") not in kinds or ("manifest" in kinds and info.get("part_size") != part_size):
        raise _other_input(out, info)
    for unit in units:
        record = records.get(str(unit["part"]))
        if record is not None and record["input"] != unit["input"]:
            raise _other_input(out, info)
    beyond = sorted(int(n) for n in records if int(n) >= len(units) and _part(out, int(n)).is_file())
    if beyond and "shard" in kinds:
        first = records[str(beyond[0])]["input"]
        raise JointspaceError(f"{out} holds parts of shards {source} does not name (first: {first}): "
                              "use a new --out, or delete those part-*.parquet")
    return records


def _drop_changed(out: Path, units: Sequence[dict[str, Any]], records: dict[str, dict[str, Any]],
                  identities: dict[str, str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Remove the parts whose input changed since they were written (redone as missing
    parts) and those beyond the units (a manifest with fewer rows now); returns both."""
    redone = [u for u in units if _part(out, u["part"]).is_file()
              and records.get(str(u["part"]), {}).get("identity") != identities[str(u["part"])]]
    stale = [int(n) for n in records if int(n) >= len(units) and _part(out, int(n)).is_file()]
    for number in [u["part"] for u in redone] + stale:
        _drop_part(out, number)
    if redone:
        logger.info("embed: redoing %d parts whose input changed (first: %s)", len(redone),
                    _describe(redone[0]))
    return redone, stale


def _describe(unit: dict[str, Any]) -> str:
    """A unit in words: its shard, or its manifest rows."""
    if unit["kind"] == "shard":
        return unit["input"]
    first, last = unit["rows"][0]["key"], unit["rows"][-1]["key"]
    return f"part {unit['part']} (rows {first} to {last})" if first != last else \
        f"part {unit['part']} (row {first})"


def _other_input(out: Path, info: dict[str, Any]) -> JointspaceError:
    # parts are matched to units by number: other units would keep stale parts
    return JointspaceError(
        f"{out} holds parts of other input (it was made from {info.get('source')}; the "
        "shards, the manifest or --part-size differ now): use a new --out, or delete its "
        "part-*.parquet to start over")


def _items(unit: dict[str, Any], modality: str) -> Iterator[tuple[dict | None, Any, dict | None]]:
    """``(metadata, item to encode, None)`` or ``(None, None, problem)`` per input of one
    unit, decoded one at a time (a shard's images never all sit in memory at once)."""
    from .data.shards import ShardError, read_shard
    from .data.stream import decode_sample
    from .modalities import MODALITIES

    captions = _caption_fields(modality)
    if unit["kind"] == "shard":
        try:
            for sample in read_shard(unit["input"]):
                try:
                    decoded = decode_sample(sample, [modality])
                except DataError as e:
                    yield None, None, {"key": sample.key, "reason": str(e)}
                    continue
                yield ({"key": sample.key, "label": sample.label,
                        CAPTION: _caption(sample.items, captions), "source": unit["input"]},
                       decoded.fields[modality], None)
        except ShardError as e:
            yield None, None, {"key": "*", "reason": str(e)}
        return
    spec = MODALITIES.get(modality)
    for row in unit["rows"]:
        found = spec.check(row["item"]) if spec.is_file else spec.check_value(row["item"])
        problem = getattr(found, "problem", found)
        if problem:
            yield None, None, {"key": row["key"], "reason": problem}
            continue
        yield ({"key": row["key"], "label": row["label"], CAPTION: row[CAPTION],
                "source": row["item"] if spec.is_file else unit["input"]}, row["item"], None)


def embed_unit(model: Any, unit: dict[str, Any], modality: str, out: Path, batch_size: int) -> dict:
    """Embed one unit, ``batch_size`` inputs at a time, and write its part (atomically);
    returns its counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    meta: list[dict] = []
    problems: list[dict] = []
    chunks: list[np.ndarray] = []
    pending: list[Any] = []

    def encode() -> None:
        if pending:
            chunks.append(np.asarray(model.encode(modality, pending, batch_size=batch_size), np.float32))
            pending.clear()
    for row, item, problem in _items(unit, modality):
        if problem is not None:
            problems.append(problem)
            continue
        meta.append(row)
        pending.append(item)
        if len(pending) >= batch_size:
            encode()
    encode()
    dim = model.config.embed_dim
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    strings = {k: pa.array([m[k] for m in meta], pa.string())  # typed: empty parts too
               for k in ("key", "label", CAPTION, "source")}
    table = pa.table({
        "key": strings["key"],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        "label": strings["label"], CAPTION: strings[CAPTION], "source": strings["source"]})
    final = _part(out, unit["part"])
    # the quarantine first, and an old one (a part redone, a kill after a part was dropped)
    # replaced or removed: a part that exists is complete, with the quarantine of its input
    if problems:
        atomic_write_text(_quarantine(out, unit["part"]), "".join(
            json.dumps({**p, "input": unit["input"]}) + "\n" for p in problems))
    else:
        _quarantine(out, unit["part"]).unlink(missing_ok=True)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return {"part": unit["part"], "items": len(meta), "quarantined": len(problems),
            "seconds": time.perf_counter() - started}


class _Embedder:
    """A Ray actor: the model, loaded once; embeds whole units."""

    def __init__(self, model_dir: str, modality: str, out: str, batch_size: int, threads: int) -> None:
        import torch

        from .model import load
        torch.set_num_threads(threads)
        self.model = load(model_dir)
        self.modality, self.out, self.batch_size = modality, Path(out), batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = [embed_unit(self.model, {k: batch[k][i] for k in batch}, self.modality, self.out,
                              self.batch_size) for i in range(len(batch["part"]))]
        return {k: [r[k] for r in results] for k in ("part", "items", "quarantined", "seconds")}


def embed(model_dir: str | Path, source: str | Path, out: str | Path, *, modality: str = "image",
          ray_address: str | None = None, workers: int = 2, batch_size: int = 256,
          part_size: int = 10_000, use_ray: bool | None = None) -> EmbedReport:
    """Embed every ``modality`` item of ``source`` with the model in ``model_dir`` into
    Parquet parts in ``out``, on Ray (``ray_address``, or a local Ray) or in this process.

    ``use_ray``: None uses Ray if it is installed (the ``[ray]`` extra), else this process
    (``workers`` is then ignored); True requires Ray, as ``ray_address`` does; False runs
    here (``ray_address`` must then be None)."""
    from .model_io import folder_fingerprint, read_config

    if use_ray is None:
        use_ray = ray_address is not None or installed("ray")
    if use_ray:  # before anything is written: a missing Ray is said at once
        require("ray.data", "ray", "jointspace embed on Ray (--ray-address, use_ray=True)")
    elif ray_address is not None:
        raise JointspaceError("embedding on a Ray cluster (ray_address) needs use_ray")
    started = time.perf_counter()
    model_dir, out = Path(model_dir).resolve(), Path(out)
    config = read_config(model_dir)
    if modality not in config.towers:
        raise JointspaceError(f"the model has no {modality!r} tower; it has {', '.join(config.towers)}")
    fingerprint = folder_fingerprint(model_dir)
    units, rejected = units_of(source, modality, part_size)
    identities = {str(u["part"]): unit_identity(u) for u in units}
    out.mkdir(parents=True, exist_ok=True)
    info_file = out / INFO_FILE
    records: dict[str, dict[str, Any]] = {}
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if info["fingerprint"] != fingerprint or info["modality"] != modality:
            raise JointspaceError(f"{out} holds {info['modality']} embeddings of another model "
                                  f"(fingerprint {info['fingerprint']}); use a new --out")
        records = _records(out, info, units, part_size, source)
    # before embed.json records the new input: a kill in between leaves them missing
    redone, stale = _drop_changed(out, units, records, identities)
    _sweep_quarantines(out, len(units))
    atomic_write_json(info_file, {
        "model": str(model_dir), "fingerprint": fingerprint, "modality": modality,
        "dim": config.embed_dim, "source": str(source), "kind": units[0]["kind"],
        "part_size": part_size, "parts": {str(u["part"]): {
            "input": u["input"], "identity": identities[str(u["part"])]} for u in units}})
    if rejected:
        with open(out / "quarantine-manifest.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rejected)
    else:
        (out / "quarantine-manifest.jsonl").unlink(missing_ok=True)
    todo = [u for u in units if not _part(out, u["part"]).is_file()]
    logger.info("embed: %d parts, %d already done, %d to do on %s", len(units),
                len(units) - len(todo), len(todo), ray_address or (
                    "a local Ray" if use_ray else "this process (Ray is not installed: "
                    f"{install_hint('ray')} embeds on a pool of actors)"))
    run = _run_on_ray if use_ray else _run_here
    results, startup = run(todo, model_dir, modality, out, batch_size, workers,
                           ray_address) if todo else ([], 0.0)
    report = EmbedReport(out, len(units), len(todo), sum(r["items"] for r in results),
                         sum(r["quarantined"] for r in results), time.perf_counter() - started,
                         startup, redone=[_describe(u) for u in redone], removed=len(stale))
    for path in sorted(out.glob("quarantine-*.jsonl")):
        report.problems += [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]
    return report


def _run_here(units: Sequence[dict], model_dir: Path, modality: str, out: Path, batch_size: int,
              workers: int, address: str | None) -> tuple[list[dict], float]:
    """The units one after another in this process, by the same :func:`embed_unit` the
    actors call (no start-up: the model's loading counts as the actors' does)."""
    from .model import load

    model = load(model_dir)
    return [embed_unit(model, dict(u), modality, out, batch_size) for u in units], 0.0


def _run_on_ray(units: Sequence[dict], model_dir: Path, modality: str, out: Path, batch_size: int,
                workers: int, address: str | None) -> tuple[list[dict], float]:
    ray = require("ray", "ray", "jointspace embed on Ray")
    require("ray.data", "ray", "jointspace embed on Ray")

    t = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else os.cpu_count(),
                 include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    startup = time.perf_counter() - t
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        # leave the read and write tasks some CPU: actors asking for all of it hang the pipeline
        per_actor = max(0.25, min(1.0, cpus / (workers + 1)))
        threads = max(1, int(cpus // workers)) if not address else max(1, int(per_actor))
        dataset = ray.data.from_items([dict(u) for u in units], override_num_blocks=len(units))
        results = dataset.map_batches(
            _Embedder, batch_size=1, num_cpus=per_actor,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(units))),
            fn_constructor_args=(str(model_dir), modality, str(out.resolve()), batch_size, threads),
        ).take_all()
    finally:
        if started_here:
            ray.shutdown()
    return results, startup


def embedding_batches(folder: str | Path, rows: int = 5_000) -> Iterator[tuple[list[dict], np.ndarray]]:
    """``(metadata rows, float32 vectors [n, dim])`` of an embed output folder, part by part
    and ``rows`` at a time: memory does not grow with the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part in sorted(Path(folder).glob("part-*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(batch_size=rows):
            column = batch.column("vector")
            vectors = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float32)
            meta = pa.Table.from_batches([batch]).drop_columns(["vector"]).to_pylist()
            yield meta, vectors.reshape(len(batch), column.type.list_size)


def embedding_count(folder: str | Path) -> int:
    """Rows in an embed output folder's parts (from their footers; nothing else is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in Path(folder).glob("part-*.parquet"))


def read_embeddings(folder: str | Path) -> tuple[dict[str, Any], Any]:
    """``(embed.json, one Arrow table of every part)`` of an embed output folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise DataError(f"not an embed output folder (no {INFO_FILE}): {folder}")
    info = json.loads((folder / INFO_FILE).read_text())
    parts = sorted(folder.glob("part-*.parquet"))
    return info, pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


__all__ = ["EmbedReport", "embed", "embed_unit", "embedding_batches", "embedding_count", "read_embeddings",
           "unit_identity", "units_of", "units_signature"]
