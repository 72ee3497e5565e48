"""The ``train`` verb: a joint model from a paired manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import Verb, bad_row_option, column_options, columns

EXAMPLES = {
    "train": ("jointspace train --data data/shapes/train.csv --val data/shapes/val.csv --out runs/m\n"
              "  jointspace train --data train.csv --out runs/m --config my.yaml --set train.max_steps=1000\n"
              "  jointspace train --data train.csv --out runs/m --objective sigmoid --accum-steps 4\n"
              "  jointspace train --data train.csv --out runs/m --resume\n"
              "  jointspace train --data train.csv --out runs/lit --init-from runs/m "
              "--set model.towers.text.trainable=none\n"
              "  jointspace train --data shapes_audio/train.csv --out runs/bound --init-from runs/m "
              "--bind audio:image\n"
              "  torchrun --nproc-per-node 2 -m jointspace.cli train --data train.csv --out runs/m"),
}


def add_verbs(verb: Verb) -> None:
    t = verb("train", "train a joint model on a paired manifest (CSV or JSONL)", EXAMPLES["train"])
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
    bad_row_option(t)
    column_options(t)


def run_train(args: argparse.Namespace) -> None:
    from ..config import load_run_config
    from ..errors import ConfigError
    from ..train.trainer import train
    if args.resume and (args.config or args.overrides or args.objective or args.accum_steps
                        or args.precision or args.init_from or args.bind):
        raise ConfigError("--resume continues with the config saved in the run; "
                          "drop --config, --set and the other config flags")
    flags = {"model.objective.name": args.objective, "train.accum_steps": args.accum_steps,
             "train.precision": args.precision}
    overrides = args.overrides + [f"{k}={v}" for k, v in flags.items() if v is not None]
    run_config = load_run_config(args.config, overrides)
    if args.accept_changed_data and not args.resume:
        raise ConfigError("--accept-changed-data goes with --resume (a fresh run has no data to compare)")
    if args.bind:
        from ..eval.pairs import parse_pair
        from ..train.init import bind_config
        if not args.init_from:
            raise ConfigError("--bind NEW:ANCHOR binds to a model: give it with --init-from")
        run_config = bind_config(run_config, args.init_from, *parse_pair(args.bind))
    result = train(run_config, args.data, args.out, val_data=args.val, resume=args.resume,
                   on_bad_row=args.on_bad_row, columns=columns(args), init_from=args.init_from,
                   accept_changed_data=args.accept_changed_data)
    print(f"model: {result.model_dir} ({result.steps} steps, {result.seconds:.0f} s, "
          f"last loss {result.last_loss:.3f}, {result.quarantined} rows quarantined)")


RUN = {"train": run_train}
