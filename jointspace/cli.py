"""The ``jointspace`` command: one verb per library call, no logic of its own."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from . import cli_embed, cli_search

EXAMPLES = {
    "data": ("jointspace data shapes --out data/shapes --n 7000\n"
             "  jointspace data export data/shapes/train.csv --format webdataset --out shards/train "
             "--shard-size 1000\n"
             "  jointspace data shapes --out data/shapes_audio --n 7000 --audio"),
    "train": ("jointspace train --data data/shapes/train.csv --val data/shapes/val.csv --out runs/m\n"
              "  jointspace train --data train.csv --out runs/m --config my.yaml --set train.max_steps=1000\n"
              "  jointspace train --data train.csv --out runs/m --objective sigmoid --accum-steps 4\n"
              "  jointspace train --data train.csv --out runs/m --resume\n"
              "  jointspace train --data train.csv --out runs/lit --init-from runs/m "
              "--set model.towers.text.trainable=none\n"
              "  jointspace train --data shapes_audio/train.csv --out runs/bound --init-from runs/m "
              "--bind audio:image\n"
              "  torchrun --nproc-per-node 2 -m jointspace.cli train --data train.csv --out runs/m"),
    "eval": ("jointspace eval runs/m --data data/shapes/test.csv\n"
             "  jointspace eval runs/m --data test.csv --image-column filepath --text-column caption\n"
             "  jointspace eval runs/bound --data data/shapes/test.csv --pair audio:text"),
    "compare": ("jointspace compare runs/a runs/b --data data/shapes/test.csv --out runs/a_vs_b\n"
                "  jointspace compare runs/it runs/bound --data test.csv --modalities image,text"),
    "import": ("jointspace import models/clip-vit-base-patch32 --out runs/clip\n"
               "  jointspace import ~/.cache/huggingface/hub/models--google--siglip-base-patch16-224/"
               "snapshots/REV --out runs/siglip"),
    "towers": ("jointspace towers\n  jointspace towers --scan ~/models --json"),
    "demo": ("jointspace demo --out demo_out\n  jointspace demo --out demo_scratch --text-tower transformer\n"
             "  jointspace demo --audio --out demo_audio"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jointspace", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_: str, example: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_,
                              epilog=f"example:\n  {example or EXAMPLES[name]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    d = verb("data", "make data: the built-in dataset, or shards from a manifest")
    kinds = d.add_subparsers(dest="dataset", required=True, metavar="KIND")
    g = kinds.add_parser("shapes", help="generate the built-in dataset (images + CSV manifests)")
    g.add_argument("--out", required=True, type=Path, help="folder to write")
    g.add_argument("--n", type=int, default=7000, help="scenes in all splits together")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--image-size", type=int, default=64)
    g.add_argument("--audio", action="store_true",
                   help="also synthesise each scene's sound (16 kHz WAV) and an audio column")
    g.add_argument("--shifted", action="store_true",
                   help="also write test_shifted.csv: the test scenes on photographic backgrounds, "
                        "rescaled, blurred, noisy, as JPEG (a distribution-shifted test split)")
    x = kinds.add_parser("export", help="write a manifest and its files as WebDataset or Parquet shards")
    x.add_argument("manifest", type=Path)
    x.add_argument("--format", choices=["webdataset", "parquet"], default="webdataset")
    x.add_argument("--out", required=True, type=Path, help="folder for the shards")
    x.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    _column_options(x)

    t = verb("train", "train a joint model on a paired manifest (CSV or JSONL)")
    t.add_argument("--data", required=True, type=Path, help="training manifest")
    t.add_argument("--val", type=Path, help="validation manifest (periodic validation)")
    t.add_argument("--out", required=True, type=Path, help="model folder to write")
    t.add_argument("--config", type=Path, help="YAML/JSON with 'model' and 'train' sections")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.max_steps=200 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--accept-changed-data", action="store_true",
                   help="with --resume: continue even though the data differs from the one the "
                        "checkpoint recorded (edited manifest, changed files); batches will differ")
    t.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                   help="start the towers this model shares with MODEL_DIR from its weights; "
                        "model.towers.<m>.trainable (all, head, adapter, none) says what trains")
    t.add_argument("--bind", metavar="NEW:ANCHOR",
                   help="with --init-from: add a tower for NEW (e.g. audio) and train it against "
                        "ANCHOR (e.g. image) only, every tower of MODEL_DIR locked (ImageBind)")
    t.add_argument("--objective", help="contrastive objective: infonce (CLIP) or sigmoid (SigLIP)")
    t.add_argument("--accum-steps", type=int, metavar="K",
                   help="split each contrastive batch into K sub-batches (cached negatives)")
    t.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="autocast precision of the towers; auto: bf16 where the hardware has it")
    _bad_row_option(t)
    _column_options(t)

    e = verb("eval", "zero-shot accuracy and retrieval between two modalities on a labelled manifest")
    e.add_argument("model", type=Path, help="model folder")
    e.add_argument("--data", required=True, type=Path, help="test manifest")
    e.add_argument("--pairs", "--pair", dest="pairs", default="image:text", metavar="A:B[,C:D]",
                   help="modality pairs evaluated against each other (default image:text; e.g. "
                        "audio:text,audio:image); with several, each writes OUT/A-B/")
    e.add_argument("--tasks", help="comma-separated subset of retrieval, zero_shot, probe, "
                                   "geometry, matryoshka (default: all the inputs allow); a task "
                                   "named that cannot run is an error")
    e.add_argument("--train-data", type=Path, metavar="MANIFEST",
                   help="labelled manifest to fit the linear probe and k-NN on")
    e.add_argument("--probe-c", type=float, help="the probe's C (default: chosen on a validation split)")
    e.add_argument("--no-report", action="store_true", help="skip report.html")
    e.add_argument("--classes", type=Path, metavar="FILE",
                   help="zero-shot class names, one per line (default: the manifest's labels)")
    e.add_argument("--templates", type=Path, metavar="FILE",
                   help="zero-shot prompt templates with {label}, one per line (default: built-in)")
    e.add_argument("--out", type=Path, help="folder for results.json (default: MODEL/eval)")
    _device_options(e)
    _bad_row_option(e)
    _column_options(e)

    c = verb("compare", "how alike two models' spaces are on the same inputs (mutual k-NN, CKA, "
                        "Procrustes retrieval)")
    c.add_argument("model_a", type=Path)
    c.add_argument("model_b", type=Path)
    c.add_argument("--data", required=True, type=Path, help="manifest whose rows both models embed")
    c.add_argument("--modalities", help="comma-separated (default: every modality both models "
                                        "have and the manifest holds)")
    c.add_argument("--out", type=Path, help="folder for results.json and report.html "
                                            "(default: MODEL_A/compare-<name of MODEL_B>)")
    c.add_argument("-k", type=int, default=10,
                   help="neighbours for mutual k-NN, 1 to the rows compared − 1 (default: 10)")
    _device_options(c)
    _bad_row_option(c)
    _column_options(c)

    i = verb("import", "make a jointspace model of a local CLIP or SigLIP folder (Hugging Face "
                       "layout; nothing is downloaded)")
    i.add_argument("folder", type=Path, help="a CLIPModel or SiglipModel folder (SigLIP 2: not yet)")
    i.add_argument("--out", required=True, type=Path, help="model folder to write")

    w = verb("towers", "what can be loaded: every tower (weights present here? parameters) and "
                       "local model folders with what opens them")
    w.add_argument("--scan", type=Path, action="append", default=[], metavar="DIR",
                   help="also list model folders under DIR (repeatable; the Hugging Face cache "
                        "is always looked at)")
    w.add_argument("--json", action="store_true", help="print JSON instead of a table")

    cli_search.add_verbs(verb, _device_options, _column_options)
    cli_embed.add_verb(verb)

    m = verb("demo", "generate shapes, train, evaluate, index and search, end to end")
    m.add_argument("--out", type=Path, default=Path("demo_out"))
    m.add_argument("--n", type=int, help="scenes to generate (default: 20000)")
    m.add_argument("--text-tower", choices=["minilm", "transformer"], default="minilm",
                   help="minilm (default): the pretrained all-MiniLM-L6-v2, locked, with a trained "
                        "projection (LiT); transformer: a text tower trained from scratch")
    m.add_argument("--image-tower", choices=["convnet", "efficientnet_lite0"], default="convnet",
                   help="convnet (default): trained from scratch; efficientnet_lite0: ImageNet-"
                        "pretrained EfficientNet-Lite0, fine-tuned at 64 px")
    m.add_argument("--config", type=Path)
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    m.add_argument("--audio", action="store_true",
                   help="the audio demo instead: bind an audio tower to an image–text model through "
                        "images alone, compare with one trained on audio–text pairs, query by sound "
                        "(default out: demo_audio, 8000 scenes)")
    return p


def _bad_row_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-row", choices=["skip", "fail"], default="skip",
                   help="skip: quarantine bad rows with their reason (default); fail: stop at the first")


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="where to embed: auto (CUDA when available, else CPU), cpu, cuda, cuda:1 …")
    p.add_argument("--batch-size", type=int, default=256, help="items embedded at once")


def _column_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-column", metavar="NAME",
                   help="manifest column holding image paths (default: image; OpenCLIP's is filepath)")
    p.add_argument("--text-column", metavar="NAME",
                   help="manifest column holding the text (default: text; OpenCLIP's is caption)")
    p.add_argument("--audio-column", metavar="NAME",
                   help="manifest column holding audio file paths (default: audio)")


def _columns(args: argparse.Namespace) -> dict[str, str] | None:
    columns = {m: getattr(args, f"{m}_column", None) for m in ("image", "text", "audio")}
    return {m: c for m, c in columns.items() if c} or None


def _lines(path: Path) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file (a clear error if it is missing)."""
    from .errors import ConfigError
    if not path.is_file():
        raise ConfigError(f"file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{path} has no lines")
    return lines


def _version() -> str:
    from . import __version__
    return f"jointspace {__version__}"


def _recalls(r: dict) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("R@"))


def _print_directions(block: dict, pair: list[str], extra=lambda d: "") -> None:
    a, b = pair
    for d in (f"{b}_to_{a}", f"{a}_to_{b}"):
        print(f"  {d:<14} {_recalls(block[d])}{extra(d)}")


def _print_results(results: dict) -> None:
    pair = results.get("pair", ["image", "text"])
    if "retrieval" in results:
        _print_retrieval(results, pair)
    for key in ("linear_probe", "knn"):
        if key in results:
            print(f"{key.replace('_', ' ')} on {results[key]['field']}: top-1 {results[key]['acc1']:.3f}")
    for key, z in results.items():
        if key.startswith("zero_shot"):
            print(f"{key}: top-1 {z['top1']:.3f}, top-5 {z['top5']:.3f} over {z['n_classes']} classes "
                  f"(chance {z['chance_top1']:.3f}), n={z['n']}")
    if "geometry" in results:
        g = results["geometry"]
        shown = [k for k in g if k.startswith(("alignment", "rankme", "modality_gap"))]
        print("geometry: " + ", ".join(f"{k} {g[k]:.3f}" for k in shown) + " (all: results.json)")


def _print_retrieval(results: dict, pair: list[str]) -> None:
    r = results["retrieval"]
    gallery = r.get("gallery", {})
    print(f"{pair[0]}↔{pair[1]} retrieval on {r['n']} pairs ({gallery.get(pair[0], r['n'])} distinct "
          f"{pair[0]}s), a hit = same {r['grouped_by']} ({r['n_groups']} groups):")
    _print_directions(r, pair, lambda d: f"  median rank {r[d]['median_rank']:.1f}"
                                         f"  (chance R@1 {r['chance'][d]['R@1']:.4f})")
    strict = r.get("strict")
    if strict:
        print("strict (only the paired row counts), with the best any model could score:")
        _print_directions(strict, pair, lambda d: f"  (ceiling {_recalls(strict['ceiling'][d])})")
    by_label = results.get("retrieval_by_label")
    if by_label:
        print("by label (a hit = same label):")
        _print_directions(by_label, pair, lambda d: f"  (chance R@1 {by_label['chance'][d]['R@1']:.4f})")
    words = results.get("test_words_retrieval")
    if words:
        print("with words training never used (test_words.csv), grouped:")
        _print_directions(words, pair)


def run(args: argparse.Namespace) -> None:
    if args.verb == "data" and args.dataset == "export":
        from .data.export import export_manifest
        report = export_manifest(args.manifest, args.out, format=args.format,
                                 shard_size=args.shard_size, columns=_columns(args))
        print(f"{report.samples} samples in {len(report.shards)} shards: {args.out}"
              + (f" ({len(report.skipped)} rows not exported: {args.out / 'export-quarantine.jsonl'})"
                 if report.skipped else ""))
        if report.shards:
            first, last = report.shards[0], report.shards[-1]
            print(f"train with: --data '{args.out}/{{{first.stem}..{last.stem}}}{first.suffix}'")
    elif args.verb == "data":
        from .data.shapes import ShapesSpec, write_shapes
        paths = write_shapes(args.out, ShapesSpec(n=args.n, seed=args.seed, image_size=args.image_size,
                                                   audio=args.audio, shifted=args.shifted))
        for split, path in paths.items():
            print(f"{split}: {path}")
    elif args.verb == "train":
        from .config import load_run_config
        from .train.trainer import train
        if args.resume and (args.config or args.overrides or args.objective or args.accum_steps
                            or args.precision or args.init_from or args.bind):
            from .errors import ConfigError
            raise ConfigError("--resume continues with the config saved in the run; "
                              "drop --config, --set and the other config flags")
        flags = {"model.objective.name": args.objective, "train.accum_steps": args.accum_steps,
                 "train.precision": args.precision}
        overrides = args.overrides + [f"{k}={v}" for k, v in flags.items() if v is not None]
        run_config = load_run_config(args.config, overrides)
        if args.accept_changed_data and not args.resume:
            from .errors import ConfigError
            raise ConfigError("--accept-changed-data goes with --resume (a fresh run has no data to compare)")
        if args.bind:
            from .errors import ConfigError
            from .eval.run import parse_pair
            from .train.init import bind_config
            if not args.init_from:
                raise ConfigError("--bind NEW:ANCHOR binds to a model: give it with --init-from")
            run_config = bind_config(run_config, args.init_from, *parse_pair(args.bind))
        result = train(run_config, args.data, args.out, val_data=args.val, resume=args.resume,
                       on_bad_row=args.on_bad_row, columns=_columns(args), init_from=args.init_from,
                       accept_changed_data=args.accept_changed_data)
        print(f"model: {result.model_dir} ({result.steps} steps, {result.seconds:.0f} s, "
              f"last loss {result.last_loss:.3f}, {result.quarantined} rows quarantined)")
    elif args.verb == "eval":
        from .eval.report import REPORT_FILE
        from .eval.run import RESULTS_FILE, evaluate
        pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
        tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
        extra = {}
        if args.classes:
            extra["classes"] = _lines(args.classes)
        if args.templates:
            extra["templates"] = _lines(args.templates)
            bad = [t for t in extra["templates"] if "{label}" not in t]
            if bad:
                from .errors import ConfigError
                raise ConfigError(f"{args.templates}: template {bad[0]!r} has no {{label}}")
        for pair in pairs:
            out = args.out or args.model / "eval"
            if len(pairs) > 1:
                out = out / pair.replace(":", "-")
            results = evaluate(args.model, args.data, out_dir=out, on_bad_row=args.on_bad_row,
                               columns=_columns(args), device=args.device, batch_size=args.batch_size,
                               pair=pair, tasks=tasks, train_manifest=args.train_data,
                               probe_c=args.probe_c, report=not args.no_report, **extra)
            _print_results(results)
            print(f"results: {out / RESULTS_FILE}"
                  + ("" if args.no_report else f"\nreport: {out / REPORT_FILE}"))
    elif args.verb == "compare":
        from .eval.compare import compare, default_out
        modalities = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
        out = args.out or default_out(args.model_a, args.model_b)
        results = compare(args.model_a, args.model_b, args.data, modalities=modalities, out_dir=out,
                          k=args.k, device=args.device, batch_size=args.batch_size,
                          on_bad_row=args.on_bad_row, columns=_columns(args))
        for m, r in results.items():
            if isinstance(r, dict):
                knn = next(key for key in r if key.startswith("mutual_knn"))
                print(f"{m}: mutual k-NN {r[knn]:.3f}, linear CKA {r['linear_cka']:.3f}, Procrustes "
                      f"R@1 {r['procrustes']['R@1']:.3f} (chance {1 / r['procrustes']['n_test']:.4f})")
        print(f"results: {out / 'results.json'}\nreport: {out / 'report.html'}")
    elif args.verb == "import":
        from .model_import import import_model
        out = import_model(args.folder, args.out)
        print(f"model: {out} (card: {out / 'README.md'})\n"
              f"next: jointspace eval {out} --data test.csv; jointspace index {out} FOLDER --collection COL")
    elif args.verb == "towers":
        _towers(args)
    elif args.verb == "embed":
        cli_embed.run(args)
    elif args.verb in ("index", "search", "serve"):
        cli_search.run(args, _columns(args) if args.verb == "index" else None)
    elif args.verb == "demo" and args.audio:
        _audio_demo(args)
    elif args.verb == "demo":
        from .demos.shapes import DEMO_SCENES, demo_config, run_demo
        result = run_demo(args.out, n=args.n or DEMO_SCENES,
                          run=demo_config(args.overrides, args.config, args.text_tower,
                                          args.image_tower))
        _print_results(result.results)
        if "test_shifted" in result.results:
            print("shifted test split (test_shifted.csv):")
            _print_results(result.results["test_shifted"])
        for query, hits in result.queries.items():
            print(f"search {query}")
            cli_search.print_hits(hits, False)
        print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
              + f", total {sum(result.seconds.values()):.0f} s")
        print(f"outputs: model {result.model_dir}, results {result.out / 'eval' / 'results.json'}, "
              f"collection {result.collection_dir}")
        print(f"report: {result.out / 'eval' / 'report.html'} (open it in a browser)")
        print(f"next: jointspace serve --collection {result.collection_dir}  "
              "(then open http://127.0.0.1:8000)")


def _audio_demo(args: argparse.Namespace) -> None:
    from .demos.audio import AUDIO_DEMO_SCENES, run_audio_demo, summary
    if args.text_tower != "minilm" or args.config or args.overrides:
        from .errors import ConfigError
        raise ConfigError("demo --audio takes --out and --n only")
    out = args.out if args.out != Path("demo_out") else Path("demo_audio")
    result = run_audio_demo(out, n=args.n or AUDIO_DEMO_SCENES)
    print(f"{'model':<10} {'direction':<14} {'hit':<8} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'chance R@1':>11}")
    for row in summary(result.results):
        print(f"{row['model']:<10} {row['direction']:<14} {row['hit']:<8} {row['R@1']:6.3f} "
              f"{row['R@5']:6.3f} {row['R@10']:6.3f} {row['chance R@1']:11.4f}")
    print("bound: audio trained against the locked image tower only (no audio–text pair); "
          "direct: the same audio tower and steps, trained on audio–text pairs")
    for query, hits in result.queries.items():
        print(f"search {query}")
        for rank, (score, name) in enumerate(hits, start=1):
            print(f"  {rank:>2}. {score:.3f}  {name}")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
          + f", total {sum(result.seconds.values()):.0f} s")
    print(f"outputs: models {', '.join(str(p) for p in result.models.values())}; "
          f"results and report.html per model and pair in {result.out / 'eval'}")


def _towers(args: argparse.Namespace) -> None:
    from dataclasses import asdict
    from .towers.listing import hf_cache_folders, list_towers, scan_folders
    towers = list_towers()
    folders = scan_folders([*args.scan, *hf_cache_folders()])
    if args.json:
        print(json.dumps({"towers": [asdict(t) for t in towers],
                          "folders": [{**asdict(f), "path": str(f.path)} for f in folders]}, indent=2))
        return
    w = max([14, *(len(t.name) for t in towers)])
    print(f"{'tower':<{w}} {'modality':<9} {'parameters':>11}  weights")
    for t in towers:
        count = f"{t.parameters:,}" if t.parameters is not None else "-"
        print(f"{t.name:<{w}} {t.modality:<9} {count:>11}  {t.weights}")
    print("whole models: a local CLIP or SigLIP folder opens with `jointspace import FOLDER --out DIR`")
    if folders:
        print("\nlocal model folders:")
        for f in folders:
            count = f", {f.parameters:,} parameters" if f.parameters is not None else ""
            print(f"  {f.path}  ({f.architecture}{count}): {f.opens_as}")
    elif args.scan:
        print(f"\nno model folder (a config.json naming its architectures) under "
              f"{', '.join(str(d) for d in args.scan)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .errors import JointspaceError
    from .progress import setup_logging
    setup_logging()
    try:
        run(args)
    except JointspaceError as e:
        print(f"jointspace {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jointspace {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
