"""The ``eval`` and ``compare`` verbs, and how evaluation results are printed."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import Verb, bad_row_option, column_options, columns, device_options, lines

EXAMPLES = {
    "eval": ("jointspace eval runs/m --data data/shapes/test.csv\n"
             "  jointspace eval runs/m --data test.csv --image-column filepath --text-column caption\n"
             "  jointspace eval runs/bound --data data/shapes/test.csv --pair audio:text\n"
             "  jointspace eval runs/clips --data data/shape_clips/test.csv --pair video:text"),
    "compare": ("jointspace compare runs/a runs/b --data data/shapes/test.csv --out runs/a_vs_b\n"
                "  jointspace compare runs/it runs/bound --data test.csv --modalities image,text"),
}


def add_verbs(verb: Verb) -> None:
    e = verb("eval", "zero-shot accuracy and retrieval between two modalities on a labelled manifest",
             EXAMPLES["eval"])
    e.add_argument("model", type=Path, help="model folder")
    e.add_argument("--data", required=True, type=Path, help="test manifest")
    e.add_argument("--pairs", "--pair", dest="pairs", default="image:text", metavar="A:B[,C:D]",
                   help="modality pairs evaluated against each other (default image:text; e.g. "
                        "audio:text,audio:image); with several, each writes OUT/A-B/")
    e.add_argument("--tasks", help="comma-separated subset of retrieval, zero_shot, probe, "
                                   "geometry, matryoshka, minimal_pairs (default: all the inputs "
                                   "allow; minimal_pairs needs a 'pair' column); a task named that "
                                   "cannot run is an error")
    e.add_argument("--train-data", type=Path, metavar="MANIFEST",
                   help="labelled manifest to fit the linear probe and k-NN on")
    e.add_argument("--probe-c", type=float, help="the probe's C (default: chosen on a validation split)")
    e.add_argument("--no-report", action="store_true", help="skip report.html")
    e.add_argument("--classes", type=Path, metavar="FILE",
                   help="zero-shot class names, one per line (default: the manifest's labels)")
    e.add_argument("--templates", type=Path, metavar="FILE",
                   help="zero-shot prompt templates with {label}, one per line (default: built-in)")
    e.add_argument("--out", type=Path, help="folder for results.json (default: MODEL/eval)")
    device_options(e)
    bad_row_option(e)
    column_options(e)

    c = verb("compare", "how alike two models' spaces are on the same inputs (mutual k-NN, CKA, "
                        "Procrustes retrieval)", EXAMPLES["compare"])
    c.add_argument("model_a", type=Path)
    c.add_argument("model_b", type=Path)
    c.add_argument("--data", required=True, type=Path, help="manifest whose rows both models embed")
    c.add_argument("--modalities", help="comma-separated (default: every modality both models "
                                        "have and the manifest holds)")
    c.add_argument("--out", type=Path, help="folder for results.json and report.html "
                                            "(default: MODEL_A/compare-<name of MODEL_B>)")
    c.add_argument("-k", type=int, default=10,
                   help="neighbours for mutual k-NN, 1 to the rows compared − 1 (default: 10)")
    device_options(c)
    bad_row_option(c)
    column_options(c)


def run_eval(args: argparse.Namespace) -> None:
    from ..eval.report import REPORT_FILE
    from ..eval.run import RESULTS_FILE, evaluate
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    extra = {}
    if args.classes:
        extra["classes"] = lines(args.classes)
    if args.templates:
        extra["templates"] = lines(args.templates)
        bad = [t for t in extra["templates"] if "{label}" not in t]
        if bad:
            from ..errors import ConfigError
            raise ConfigError(f"{args.templates}: template {bad[0]!r} has no {{label}}")
    for pair in pairs:
        out = args.out or args.model / "eval"
        if len(pairs) > 1:
            out = out / pair.replace(":", "-")
        results = evaluate(args.model, args.data, out_dir=out, on_bad_row=args.on_bad_row,
                           columns=columns(args), device=args.device, batch_size=args.batch_size,
                           pair=pair, tasks=tasks, train_manifest=args.train_data,
                           probe_c=args.probe_c, report=not args.no_report, **extra)
        print_results(results)
        print(f"results: {out / RESULTS_FILE}"
              + ("" if args.no_report else f"\nreport: {out / REPORT_FILE}"))


def run_compare(args: argparse.Namespace) -> None:
    from ..eval.compare import compare, default_out
    modalities = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
    out = args.out or default_out(args.model_a, args.model_b)
    results = compare(args.model_a, args.model_b, args.data, modalities=modalities, out_dir=out,
                      k=args.k, device=args.device, batch_size=args.batch_size,
                      on_bad_row=args.on_bad_row, columns=columns(args))
    for m in results["modalities"]:
        r = results[m]
        knn = next(key for key in r if key.startswith("mutual_knn"))
        print(f"{m}: mutual k-NN {r[knn]:.3f}, linear CKA {r['linear_cka']:.3f}, Procrustes "
              f"R@1 {r['procrustes']['R@1']:.3f} (chance {1 / r['procrustes']['n_test']:.4f})")
    print(f"results: {out / 'results.json'}\nreport: {out / 'report.html'}")


RUN = {"eval": run_eval, "compare": run_compare}


def _recalls(r: dict) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("R@"))


def _print_directions(block: dict, pair: list[str], extra=lambda d: "") -> None:
    from ..eval.pairs import direction_keys
    for d in direction_keys(pair):
        print(f"  {d:<14} {_recalls(block[d])}{extra(d)}")


def print_results(results: dict) -> None:
    """The headline figures of :func:`~jointspace.eval.run.evaluate`'s results, a line each."""
    from ..eval.pairs import DEFAULT_PAIR
    pair = results.get("pair", list(DEFAULT_PAIR))
    if "retrieval" in results:
        _print_retrieval(results, pair)
    if "minimal_pairs" in results:
        print_minimal_pairs(results["minimal_pairs"])
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


def print_minimal_pairs(m: dict) -> None:
    """The minimal-pairs figures (:mod:`jointspace.eval.minimal_pairs`), a few lines."""
    if not m.get("n_pairs"):
        print(f"minimal pairs: no pair has both its items ({m.get('skipped_pairs', 0)} incomplete)")
        return
    two_way = "  ".join(f"{d} {v:.3f}" for d, v in m["two_way"].items())
    print(f"minimal pairs ({m['n_pairs']} pairs, {m['n_items']} items, {m['n_captions']} captions"
          + (f"; {m['skipped_pairs']} incomplete pairs skipped" if m["skipped_pairs"] else "")
          + f"): 2-way accuracy {two_way} (chance {m['chance']:.2f})")
    r = m["retrieval"]
    print("  pairs-only gallery R@1: " + "  ".join(
        f"{d} {r[d]['R@1']:.3f} (chance {r['chance'][d]['R@1']:.4f})" for d in m["two_way"]))
    first = next(iter(m["two_way"]))
    if m.get("by_label"):
        print(f"  2-way {first} by label: " + ", ".join(
            f"{label} {v[first]:.2f}" for label, v in m["by_label"].items()))


def _print_retrieval(results: dict, pair: list[str]) -> None:
    r = results["retrieval"]
    gallery = r.get("gallery", {})
    print(f"{pair[0]}↔{pair[1]} retrieval on {r['n']} pairs ({gallery.get(pair[0], r['n'])} distinct "
          f"{pair[0]}s), a hit = same {r['grouped_by']} ({r['n_groups']} groups):")
    _print_directions(r, pair, lambda d: f"  median rank {r[d]['median_rank']:.1f}"
                                         + (f"  mean rank {r[d]['mean_rank']:.1f}" if "mean_rank" in r[d] else "")
                                         + f"  (chance R@1 {r['chance'][d]['R@1']:.4f})")
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
