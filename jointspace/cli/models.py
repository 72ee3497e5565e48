"""The ``import`` and ``towers`` verbs: models made elsewhere, and what can be loaded."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import Verb

EXAMPLES = {
    "import": ("jointspace import models/clip-vit-base-patch32 --out runs/clip\n"
               "  jointspace import ~/.cache/huggingface/hub/models--google--siglip-base-patch16-224/"
               "snapshots/REV --out runs/siglip"),
    "towers": ("jointspace towers\n  jointspace towers --scan ~/models --json"),
}


def add_verbs(verb: Verb) -> None:
    i = verb("import", "make a jointspace model of a local CLIP or SigLIP folder (Hugging Face "
                       "layout; nothing is downloaded)", EXAMPLES["import"])
    i.add_argument("folder", type=Path, help="a CLIPModel or SiglipModel folder (SigLIP 2: not yet)")
    i.add_argument("--out", required=True, type=Path, help="model folder to write")

    w = verb("towers", "what can be loaded: every tower (weights present here? parameters) and "
                       "local model folders with what opens them", EXAMPLES["towers"])
    w.add_argument("--scan", type=Path, action="append", default=[], metavar="DIR",
                   help="also list model folders under DIR (repeatable; the Hugging Face cache "
                        "is always looked at)")
    w.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_import(args: argparse.Namespace) -> None:
    from ..model_import import import_model
    out = import_model(args.folder, args.out)
    print(f"model: {out} (card: {out / 'README.md'})\n"
          f"next: jointspace eval {out} --data test.csv; jointspace index {out} FOLDER --collection COL")


def run_towers(args: argparse.Namespace) -> None:
    from dataclasses import asdict
    from ..towers.listing import hf_cache_folders, list_towers, scan_folders
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


RUN = {"import": run_import, "towers": run_towers}
