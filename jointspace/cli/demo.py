"""The ``demo`` verb: the built-in dataset end to end (:mod:`jointspace.demos`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import Verb
from .eval import print_results
from .index import print_hits

EXAMPLES = {
    "demo": ("jointspace demo --out demo_out\n  jointspace demo --out demo_scratch --text-tower transformer\n"
             "  jointspace demo --audio --out demo_audio\n  jointspace demo --video --out demo_video"),
}


def add_verbs(verb: Verb) -> None:
    m = verb("demo", "generate shapes, train, evaluate, index and search, end to end", EXAMPLES["demo"])
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
    m.add_argument("--video", action="store_true",
                   help="the video demo instead: train mean pooling and a temporal transformer over "
                        "frames on the same clips and budget, test both on minimal pairs (the same "
                        "frames in another order) and video↔text retrieval (default out: demo_video, "
                        "3000 clips)")


def run_demo(args: argparse.Namespace) -> None:
    if args.audio and args.video:
        from ..errors import ConfigError
        raise ConfigError("demo takes --audio or --video, not both")
    if args.audio:
        _audio_demo(args)
        return
    if args.video:
        _video_demo(args)
        return
    from ..demos import shapes
    result = shapes.run_demo(args.out, n=args.n or shapes.DEMO_SCENES,
                             run=shapes.demo_config(args.overrides, args.config, args.text_tower,
                                                    args.image_tower))
    print_results(result.results)
    if "test_shifted" in result.results:
        print("shifted test split (test_shifted.csv):")
        print_results(result.results["test_shifted"])
    for query, hits in result.queries.items():
        print(f"search {query}")
        print_hits(hits, False)
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
          + f", total {sum(result.seconds.values()):.0f} s")
    print(f"outputs: model {result.model_dir}, results {result.out / 'eval' / 'results.json'}, "
          f"collection {result.collection_dir}")
    print(f"report: {result.out / 'eval' / 'report.html'} (open it in a browser)")
    print(f"next: jointspace serve --collection {result.collection_dir}  "
          "(then open http://127.0.0.1:8000)")


def _audio_demo(args: argparse.Namespace) -> None:
    from ..demos.audio import AUDIO_DEMO_SCENES, run_audio_demo, summary
    if args.text_tower != "minilm" or args.config or args.overrides:
        from ..errors import ConfigError
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


def _video_demo(args: argparse.Namespace) -> None:
    from ..demos.video import VIDEO_DEMO_CLIPS, run_video_demo
    if args.text_tower != "minilm" or args.image_tower != "convnet" or args.config:
        from ..errors import ConfigError
        raise ConfigError("demo --video takes --out, --n and --set only")
    out = args.out if args.out != Path("demo_out") else Path("demo_video")
    result = run_video_demo(out, n=args.n or VIDEO_DEMO_CLIPS, overrides=args.overrides)
    print_video_table(result.results)
    print("mean: the mean of the frame embeddings (blind to order); transformer: a temporal "
          "transformer with learned positions; the same frame tower, text tower, data and steps")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
          + f", total {sum(result.seconds.values()):.0f} s; training loop "
          + ", ".join(f"{k} {v:.1f} steps/s" for k, v in result.steps_per_s.items()))
    print(f"outputs: models {', '.join(str(p) for p in result.models.values())}; results and "
          f"report.html per model in {result.out / 'eval'}")


def print_video_table(results: dict) -> None:
    """The video demo's table: a row per model and direction (:func:`..demos.video.summary`)."""
    from ..demos.video import summary
    rows = summary(results)
    if not rows:
        return
    first = next(iter(results.values()))
    a, b = first["pair"]
    m = first.get("minimal_pairs") or {}
    print(f"test split: {first['retrieval']['gallery'].get(a, first['n'])} clips, {first['n']} "
          f"captions; minimal pairs: {m.get('n_pairs', 0)} (2-way chance 0.5)")
    print(f"{'model':<12} {'direction':<14} {'2-way':>6} {'pairs R@1':>9} {'R@1':>6} {'R@5':>6} "
          f"{'med rank':>8} {'mean rank':>9} {'chance R@1':>10}")
    for row in rows:
        for d in (f"{a}_to_{b}", f"{b}_to_{a}"):
            cells = [row[f"2-way {d}"], row[f"pairs R@1 {d}"]]
            shown = " ".join(f"{c:>{w}.3f}" if c is not None else f"{'–':>{w}}"
                             for c, w in zip(cells, (6, 9)))
            print(f"{row['model']:<12} {d:<14} {shown} {row[f'R@1 {d}']:6.3f} {row[f'R@5 {d}']:6.3f} "
                  f"{row[f'median_rank {d}']:8.1f} {row[f'mean_rank {d}']:9.1f} "
                  f"{row[f'chance R@1 {d}']:10.4f}")
        if row["zero-shot top-1"] is not None:
            print(f"{row['model']:<12} zero-shot top-1 {row['zero-shot top-1']:.3f} over the action "
                  f"labels (chance {row['chance top-1']:.3f})")


RUN = {"demo": run_demo}
