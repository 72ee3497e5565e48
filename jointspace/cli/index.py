"""The ``index``, ``search`` and ``serve`` verbs: collections of embedded items."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..modalities import MODALITIES
from .common import Verb, column_options, columns, device_options

EXAMPLES = {
    "index": ("jointspace index runs/m data/shapes/images/test --collection runs/col\n"
              "  jointspace index runs/m data/shapes/test.csv --collection runs/col\n"
              "  jointspace index runs/m ~/photos --collection runs/photos --delete-missing"),
    "search": ('jointspace search --collection runs/col "a red circle"\n'
               "  jointspace search --collection runs/col --image query.png -k 5 --json\n"
               '  jointspace search --collection runs/col --image q.png --term "text:red:0.5" '
               '--term "text:blurry:-0.5" --where label=circle'),
    "serve": ("jointspace serve --collection runs/col\n"
              "  jointspace serve --collection runs/col --model models/m   # the model moved\n"
              "  JOINTSPACE_API_KEY=secret jointspace serve --collection runs/col --host 0.0.0.0"),
}


def add_verbs(verb: Verb) -> None:
    i = verb("index", "embed a folder (images, audio, .txt) or a manifest into a collection, "
                      "incrementally", EXAMPLES["index"])
    i.add_argument("model", type=Path, help="model folder")
    i.add_argument("source", type=Path, help="folder of files, or a manifest (CSV/TSV/JSONL)")
    i.add_argument("--collection", required=True, type=Path, help="collection folder (made if new)")
    i.add_argument("--items", metavar="MODALITY",
                   help="the modality of the items: a folder's files of it only, or a manifest's "
                        "column of it, its other columns being fields of each item (a clip's "
                        "poster and captions); default: every file of the model's modalities, "
                        "a manifest's first file column in the model's order")
    i.add_argument("--delete-missing", action="store_true",
                   help="delete items of this source whose file or row is gone")
    i.add_argument("--store", default="faiss", help="vector store of a new collection: faiss "
                                                    "(exact when small, IVF when large) or exact")
    i.add_argument("--exact-below", type=int, help="faiss: an IVF index is built from this many "
                                                    "vectors on (default 50000)")
    i.add_argument("--nprobe", type=int, help="faiss: IVF cells a query visits (default 32)")
    i.add_argument("--prefix-dim", type=int, help="index only this Matryoshka prefix and re-rank "
                                                  "candidates with the full vectors")
    device_options(i)
    column_options(i)
    _search_verb(verb)
    v = verb("serve", "serve a collection: an HTTP API and a search page", EXAMPLES["serve"])
    v.add_argument("--collection", required=True, type=Path)
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--api-key", help="require this key on every request (default: "
                                     "$JOINTSPACE_API_KEY; none: open)")
    v.add_argument("--device", default="auto", help="device that embeds queries")
    v.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port, each with its own index and model "
                        "(more text queries/s; memory × N)")
    v.add_argument("--threads", type=int,
                   help="math threads per process (default: all cores ÷ workers)")
    _model_option(v)


def _search_verb(verb: Verb) -> None:
    s = verb("search", "query a collection by text, image, audio, or a weighted mix",
             EXAMPLES["search"])
    s.add_argument("query", nargs="?", help="text query")
    s.add_argument("--collection", required=True, type=Path)
    _file_query_options(s)
    s.add_argument("--term", action="append", default=[], metavar="MODALITY:VALUE:WEIGHT",
                   help="a weighted query term, e.g. text:red:0.5 or text:blurry:-0.5 (repeatable)")
    s.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                   help="keep items whose field (label, modality, source …) or metadata key "
                        "has this value (repeatable)")
    s.add_argument("-k", type=int, default=10, help="number of hits")
    s.add_argument("--offset", type=int, default=0, help="skip this many hits (pagination)")
    s.add_argument("--target", help="indexed modality to search (default: the first)")
    s.add_argument("--no-calibrate", action="store_true",
                   help="add the terms' raw cosines instead of calibrated scores")
    s.add_argument("--nprobe", type=int, help="IVF cells to visit (more: better recall, slower)")
    s.add_argument("--json", action="store_true", help="print hits as JSON")
    s.add_argument("--device", default="auto", help="device that embeds the query: auto, cpu, cuda …")
    _model_option(s)


def _file_query_options(p: argparse.ArgumentParser) -> None:
    """``--<name> FILE`` for every registered file modality: a query by that file (a
    modality whose name another option of the verb has takes ``--term`` only)."""
    for name in MODALITIES.names():
        if MODALITIES.get(name).is_file:
            try:
                p.add_argument(f"--{name}", dest=f"{name}_query", metavar=name.upper(), type=Path,
                              help=f"{name} query")
            except argparse.ArgumentError:
                pass  # named like another option of the verb


def _model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="the collection's model folder, if it moved since indexing (checked by "
                        "fingerprint; the new place is recorded in the collection)")


def parse_term(spec: str) -> Any:
    """``MODALITY:VALUE[:WEIGHT]`` → a :class:`~jointspace.index.Term` (VALUE may hold colons)."""
    from ..errors import JointspaceError
    from ..index import Term

    modality, _, rest = spec.partition(":")
    value, weight = rest, 1.0
    head, sep, tail = rest.rpartition(":")
    if sep:
        try:
            value, weight = head, float(tail)
        except ValueError:
            pass
    if not modality or not value:
        raise JointspaceError(f"--term {spec!r}: expected MODALITY:VALUE[:WEIGHT], e.g. text:red:0.5")
    return Term(modality, value, weight)


def parse_where(specs: list[str]) -> dict[str, list[str]] | None:
    from ..errors import JointspaceError

    where: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise JointspaceError(f"--where {spec!r}: expected FIELD=VALUE, e.g. label=circle")
        where.setdefault(name, []).append(value)
    return where or None


def print_hits(hits: list, as_json: bool) -> None:
    """One hit a line (``0 results`` when there are none), or as a JSON list."""
    if as_json:
        print(json.dumps([{"rank": h.rank, "score": round(h.score, 4), **h.item} for h in hits],
                         indent=2))
        return
    if not hits:
        print("0 results")
    for h in hits:
        print(f"  {h.rank:>2}. {h.score:.3f}  {h.item.get('path') or h.item.get('key')}  "
              f"{_description(h.item)}")


def _description(item: dict) -> str:
    """What a hit line shows after the path: the item's text (its first text-like
    modality's value), else its label."""
    texts = (item.get(m) for m in MODALITIES.names() if MODALITIES.get(m).text_like)
    return next((t for t in texts if t), None) or item.get("label") or ""


def run_index(args: argparse.Namespace) -> None:
    index_with(args, columns(args))


def index_with(args: argparse.Namespace, columns: dict[str, str] | None) -> None:
    """The ``index`` verb with the manifest ``columns`` given."""
    from ..index import index_source
    from ..progress import logger

    params = {k: v for k, v in (("exact_below", args.exact_below), ("nprobe", args.nprobe))
              if v is not None}
    report = index_source(args.collection, args.model, args.source, batch_size=args.batch_size,
                          delete_missing=args.delete_missing, device=args.device,
                          store=args.store, store_params=params, prefix_dim=args.prefix_dim,
                          columns=columns, items=getattr(args, "items", None))
    logger.debug("%s", report)
    print(report.summary())
    if report.problems:
        print(f"quarantined with reasons: {len(report.problems)} (first: "
              f"{report.problems[0].path or report.problems[0].key}: {report.problems[0].reason})")
    print(f"collection: {args.collection}\nnext: jointspace serve --collection {args.collection}")


def run_search(args: argparse.Namespace) -> None:
    from ..index import Collection, Term

    col = Collection.open(args.collection, device=args.device, model=args.model)
    files = [Term(m, getattr(args, f"{m}_query")) for m in MODALITIES.names()
             if getattr(args, f"{m}_query", None) is not None]
    hits = col.search(text=args.query, terms=[*files, *(parse_term(t) for t in args.term)],
                      k=args.k, offset=args.offset, where=parse_where(args.where),
                      target=args.target, calibrate=not args.no_calibrate, nprobe=args.nprobe)
    print_hits(hits, args.json)


def run_serve(args: argparse.Namespace) -> None:
    from ..serve import serve

    serve(args.collection, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("JOINTSPACE_API_KEY"), device=args.device,
          workers=args.workers, threads=args.threads,
          **({"model": args.model} if args.model else {}))


RUN = {"index": run_index, "search": run_search, "serve": run_serve}
