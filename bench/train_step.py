"""Benchmark: one full training step of a tiny CLIP, jointspace vs OpenCLIP.

Both frameworks train the same architecture on the same random batch in the
same invocation, on the same torch build, each case in a fresh subprocess so
that its peak RSS is its own:

* Vision: ViT, 64 px, patch 8, width 256, 4 layers, 4 heads.
* Text: transformer, context 32, width 256, 4 layers, 4 heads, vocab 49,408.
* Embed dim 256; batch 128; AdamW (weight decay 0.1 on matrices only), grad
  clip 1.0; float32 unless a case says otherwise; random weights, nothing
  downloaded.

OpenCLIP side: ``open_clip.model.CLIP`` built from config dataclasses, its
``ClipLoss``, and the step of ``open_clip_train/train.py`` (zero grad, forward,
loss, backward, ``clip_grad_norm_``, ``AdamW.step``, clamp of ``logit_scale``);
its optimizer is what ``open_clip_train/main.py`` builds (plain
``torch.optim.AdamW``, betas 0.9/0.98, eps 1e-6), which on CPU is the
single-tensor for-loop implementation; the ``oc+fused`` case gives it
jointspace's fused AdamW instead. jointspace side:
``jointspace.train.step.train_step`` with ``build_optimizer`` (fused AdamW) and
``training_objective`` (blockwise InfoNCE).

The batch is one shared uint8 image tensor ``[B, 3, 64, 64]`` and one token
tensor ``[B, 32]`` (ids 3 … vocab-2, random lengths 8 … 32, the last real
token is vocab-1 so OpenCLIP's argmax/EOT pooling finds it, zero padding).
Both steps start from the uint8 images: jointspace scales them inside its
tower, the OpenCLIP step normalises them (mean / std) before its forward, as
its loader would (a ~1 ms cost, far below a step). Known architectural
differences, of similar cost: OpenCLIP's text transformer is causal and pools
the EOT token; jointspace's is bidirectional with a padding mask and mean
pooling; OpenCLIP's ViT has a ``ln_pre`` and a bias-free patch conv.

Each case: ``torch.set_num_threads(--threads)``, build, ``--warmup`` steps (the
first one, which includes any ``torch.compile`` work, is timed on its own as
"first step"), then ``--steps`` timed steps. Reported per case: samples/s over
the timed steps, the first-step time, the process's peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``, import and build included) and the
peak RSS over the timed steps alone (VmHWM after resetting it with
``/proc/self/clear_refs``). Cases run in alternating order over ``--rounds``
rounds (order reversed every other round) because this machine's speed
drifts by ~50 % within an hour; the summary gives per-round figures, medians
and ratios against the first case.

Setup (a venv of its own, `.bench-venv/` at the repo root, ignored by git; OpenCLIP's model needs
torchvision, which needs torch 2.14.1 — a CUDA build that runs on CPU; never
install these into the project's .venv)::

    python3 -m venv .bench-venv
    .bench-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    .bench-venv/bin/pip install open-clip-torch==3.3.0 torch==2.14.1 torchvision==0.29.1
    .bench-venv/bin/pip install numpy pillow tokenizers safetensors tqdm pyyaml torch==2.14.1
    .bench-venv/bin/pip install --no-deps -e .        # jointspace itself, from the repo root
    .bench-venv/bin/python -c "import torch; print(torch.__version__)"   # 2.14.1+cu130

Run (from the repo root)::

    .bench-venv/bin/python bench/train_step.py                      # oc vs js, 3 rounds
    .bench-venv/bin/python bench/train_step.py --cases oc js js+compile --steps 20
    .bench-venv/bin/python bench/train_step.py --cases oc oc+fused js js+bf16 --rounds 2
    .bench-venv/bin/python bench/train_step.py --json results.json

Cases: ``oc`` (OpenCLIP as its trainer runs it), ``js`` (jointspace), and
either followed by ``+`` options: ``compile`` (``torch.compile`` of the whole
model, inductor; compile time lands in "first step"), ``bf16`` (bf16
autocast; for js via ``train_step(precision="bf16")``), ``fused`` (oc only:
fused AdamW), ``foreach`` (oc only: foreach AdamW), ``nofused`` (js only: an
unfused AdamW with jointspace's parameter groups, to isolate the optimizer).

The machine is shared: another process on the two cores slows a 2-thread
step several-fold (OpenMP threads wait for a descheduled sibling), so every
case reports the share of the cores that *other* processes used while it ran
and the summary warns when that exceeds 5 %; ``--wait-quiet SECONDS`` waits
for idle cores before each case, and ``--threads 1`` gives figures that a
neighbour disturbs far less. bf16 autocast only pays on a CPU with native bf16
instructions (``avx512_bf16`` / ``amx_bf16``, printed in the summary); on an
AVX2-only host expect it to lose. Benchmarks never run in CI.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import (cpu_flags, machine_busy_s, own_children_cpu_s, reset_peak, rss_now,
                      rss_peak_since_reset, wait_quiet)

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
VOCAB = 49408
CONTEXT = 32
WIDTH = 256
LAYERS = 4
HEADS = 4
IMAGE = 64
PATCH = 8
EMBED = 256
OPTIONS = {"oc": {"compile", "bf16", "fused", "foreach"}, "js": {"compile", "bf16", "nofused"}}


# --------------------------------------------------------------------------- memory
def make_batch(batch: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=g)
    text = torch.zeros(batch, CONTEXT, dtype=torch.long)
    lengths = torch.randint(8, CONTEXT + 1, (batch,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        text[i, : n - 1] = torch.randint(3, VOCAB - 1, (n - 1,), generator=g)
        text[i, n - 1] = VOCAB - 1  # EOT: the largest id, found by OpenCLIP's argmax pooling
    return images, text


# --------------------------------------------------------------------------- OpenCLIP
def build_openclip(opts: set[str], lr: float, wd: float):
    import torch
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=LAYERS, width=WIDTH, head_width=WIDTH // HEADS,
                           patch_size=PATCH, image_size=IMAGE)
    text = CLIPTextCfg(context_length=CONTEXT, vocab_size=VOCAB, width=WIDTH, heads=HEADS,
                       layers=LAYERS)
    model = CLIP(embed_dim=EMBED, vision_cfg=vision, text_cfg=text)
    model.train()
    loss_fn = ClipLoss()

    # the parameter groups and AdamW of open_clip_train/main.py
    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd}]
    kw = {"fused": True} if "fused" in opts else {"foreach": True} if "foreach" in opts else {}
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, **kw)
    forward = torch.compile(model) if "compile" in opts else model
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def step(images, text_ids) -> float:
        x = images.float().div_(255).sub_(mean).div_(std)
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in opts else _null()
        with ctx:
            img_f, txt_f, scale = forward(x, text_ids)
        loss = loss_fn(img_f.float(), txt_f.float(), scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, norm_type=2.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return float(loss.detach())

    return model, step, type(opt).__name__ + str(kw or "(for-loop)")


def _null():
    import contextlib

    return contextlib.nullcontext()


# --------------------------------------------------------------------------- jointspace
def build_jointspace(opts: set[str], lr: float, wd: float):
    import torch

    sys.path.insert(0, str(ROOT))
    from jointspace.config import ModelConfig, TowerSpec
    from jointspace.model import JointModel
    from jointspace.train.step import build_optimizer, train_step, training_objective

    cfg = ModelConfig(embed_dim=EMBED, towers={
        "image": TowerSpec("vit", {"image_size": IMAGE, "patch_size": PATCH, "width": WIDTH,
                                   "layers": LAYERS, "heads": HEADS}),
        "text": TowerSpec("transformer", {"vocab_size": VOCAB, "context_length": CONTEXT,
                                          "width": WIDTH, "layers": LAYERS, "heads": HEADS})})
    model = JointModel(cfg)
    model.train()
    objective = training_objective(cfg)
    if "nofused" in opts:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(
            [{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    else:
        opt = build_optimizer(model, lr=lr, weight_decay=wd)
    if "compile" in opts:
        model.compile()  # in place: same module, same parameters, compiled forward
    precision = "bf16" if "bf16" in opts else "fp32"
    fused = opt.defaults.get("fused")

    def step(images, text_ids) -> float:
        out = train_step(model, objective, opt, {"image": images, "text": text_ids},
                         precision=precision, grad_clip=1.0)
        return out.loss

    return model, step, f"AdamW(fused={bool(fused)})"


# --------------------------------------------------------------------------- one case
def child(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    impl, *rest = args.child.split("+")
    opts = set(rest)
    build = build_openclip if impl == "oc" else build_jointspace
    model, step, opt_name = build(opts, args.lr, args.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    images, text = make_batch(args.batch)
    t_built = time.perf_counter()

    t0 = time.perf_counter()
    first_loss = step(images, text)
    first = time.perf_counter() - t0
    for _ in range(max(args.warmup - 1, 0)):
        step(images, text)
    rss_before = rss_now()
    peak_reset = reset_peak()
    times, losses = [], []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step(images, text))
        times.append(time.perf_counter() - t0)
    total = sum(times)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    out = {
        "case": args.child, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_flags(("avx512_bf16", "amx_bf16")),
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "params": n_params, "optimizer": opt_name,
        "samples_per_s": args.batch * args.steps / total,
        "step_s_median": statistics.median(times), "step_s_min": min(times),
        "cpu_s_per_step": cpu_s / args.steps,
        "first_step_s": first, "setup_s": t_built - t_start,
        "first_loss": first_loss, "last_loss": losses[-1],
        "finite": all(math.isfinite(x) for x in losses),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "steady_peak_rss": rss_peak_since_reset() if peak_reset else None,
        "rss_before_timing": rss_before,
        "children_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_case(case: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--lr", str(args.lr),
           "--weight-decay", str(args.weight_decay)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    waited = wait_quiet(args.wait_quiet)
    load_before = os.getloadavg()[0]
    busy0, own0, t0 = machine_busy_s(), own_children_cpu_s(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    busy1, own1, wall = machine_busy_s(), own_children_cpu_s(), time.monotonic() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[len("RESULT "):])
            out["load_before"] = load_before
            out["waited_s"] = waited
            # CPU time other processes used while this case ran, as a share of all cores
            foreign = max((busy1 - busy0) - (own1 - own0), 0.0)
            out["foreign_cpu"] = foreign / (wall * (os.cpu_count() or 1))
            return out
    tail = (proc.stdout + proc.stderr)[-3000:]
    return {"case": case, "error": f"exit {proc.returncode}: {tail}"}


# --------------------------------------------------------------------------- report
def gib(x) -> str:
    return "-" if x is None else f"{x / GIB:.2f}"


def summarise(cases: list[str], results: list[list[dict]], max_foreign: float = 0.1) -> str:
    lines = []

    def usable(r: dict) -> bool:
        return "error" not in r and r.get("foreign_cpu", 0.0) <= max_foreign

    ok = {c: [r for rnd in results for r in rnd if r["case"] == c and usable(r)] for c in cases}
    first_ok = next((r for c in cases for r in ok[c]), None)
    if first_ok:
        lines.append(f"torch {first_ok['torch']}, {first_ok['threads']} threads, batch "
                     f"{first_ok['batch']}, {first_ok['warmup']} warm-up + {first_ok['steps']} "
                     f"timed steps per case; CPU capability {first_ok.get('cpu_capability')}, "
                     f"native bf16: {first_ok.get('cpu_bf16')}")
    lines.append("")
    lines.append("per round (samples/s | first step s | peak RSS GiB | timed-steps peak GiB | "
                 "CPU s per step | share of all cores other processes used during the case)")
    for i, rnd in enumerate(results):
        order = " -> ".join(r["case"] for r in rnd)
        lines.append(f"  round {i + 1} ({order})")
        for r in rnd:
            if "error" in r:
                lines.append(f"    {r['case']:<22} FAILED: {r['error'].splitlines()[-1][:200]}")
                continue
            lines.append(f"    {r['case']:<22} {r['samples_per_s']:7.1f}   {r['first_step_s']:7.2f}"
                         f"   {gib(r['peak_rss']):>6}   {gib(r['steady_peak_rss']):>6}"
                         f"   {r['cpu_s_per_step']:6.2f}   {r['foreign_cpu']:5.0%}"
                         + ("" if usable(r) else "   DISTURBED: left out of the medians")
                         + ("" if r["finite"] else "   NON-FINITE LOSS"))
    lines.append("")
    base = cases[0]
    base_sps = statistics.median([r["samples_per_s"] for r in ok[base]]) if ok[base] else None
    base_rss = statistics.median([r["peak_rss"] for r in ok[base]]) if ok[base] else None
    base_steady = statistics.median([r["steady_peak_rss"] or 0 for r in ok[base]]) if ok[base] else None
    lines.append(f"medians over the undisturbed rounds (other processes used <= {max_foreign:.0%} "
                 f"of the cores); ratios are case / {base}, and per round the ratio of each case "
                 f"to the {base} run of the same round (both undisturbed)")
    hdr = (f"  {'case':<22} {'params':>8} {'n':>2} {'samples/s':>9} {'ratio':>6} {'per-round ratios':>22}"
           f" {'first s':>8} {'peak GiB':>8} {'ratio':>6} {'child GiB':>9} {'steady GiB':>10} {'ratio':>6}  optimizer")
    lines.append(hdr)
    for c in cases:
        rs = ok[c]
        if not rs:
            lines.append(f"  {c:<22} no successful undisturbed run")
            continue
        sps = statistics.median([r["samples_per_s"] for r in rs])
        rss = statistics.median([r["peak_rss"] for r in rs])
        steady = statistics.median([r["steady_peak_rss"] or 0 for r in rs])
        first = statistics.median([r["first_step_s"] for r in rs])
        per_round = []
        for rnd in results:
            a = next((r for r in rnd if r["case"] == c and usable(r)), None)
            b = next((r for r in rnd if r["case"] == base and usable(r)), None)
            if a and b:
                per_round.append(f"{a['samples_per_s'] / b['samples_per_s']:.2f}")
        lines.append(
            f"  {c:<22} {rs[0]['params'] / 1e6:7.2f}M {len(rs):>2} {sps:9.1f} "
            f"{(sps / base_sps if base_sps else float('nan')):6.2f} {' '.join(per_round):>22}"
            f" {first:8.2f} {gib(rss):>8} {(rss / base_rss if base_rss else float('nan')):6.2f}"
            f" {gib(max(r['children_peak_rss'] for r in rs)):>9}"
            f" {gib(steady):>10} {(steady / base_steady if base_steady else float('nan')):6.2f}"
            f"  {rs[0]['optimizer']}")
    lines.append("")
    lines.append("peak GiB: whole process (getrusage ru_maxrss, torch import + build included); "
                 "child GiB: largest helper process it started (inductor compile workers, which "
                 "live only while compiling); steady GiB: peak over the timed steps only. "
                 "'first s' includes compilation for +compile cases (much shorter with a warm "
                 "inductor cache in /tmp/torchinductor_$USER) and is excluded from samples/s.")
    foreign = [r["foreign_cpu"] for rnd in results for r in rnd if "error" not in r]
    if foreign and max(foreign) > 0.05:
        lines.append(f"WARNING: other processes used up to {max(foreign):.0%} of the cores during "
                     f"a case; cases above {max_foreign:.0%} are left out of the medians (n = "
                     "runs kept). Rerun on a quiet machine for full figures.")
    lines.append("Architectures: OpenCLIP text = causal + EOT pooling; jointspace text = "
                 "bidirectional + padding mask + mean pooling (similar cost).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["oc", "js"],
                   help="cases to run; the first is the reference for the ratios "
                        "(oc, js, oc+fused, oc+foreach, oc+compile, oc+bf16, js+compile, "
                        "js+bf16, js+nofused, js+compile+bf16, ...)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=15, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each case wait up to this long for other processes to leave "
                        "the cores idle (< 10%% busy over 2 s)")
    p.add_argument("--max-foreign", type=float, default=0.1, metavar="SHARE",
                   help="leave a case out of the medians when other processes used more than "
                        "this share of the cores while it ran (default 0.1)")
    p.add_argument("--json", type=Path, help="also write every raw result here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.warmup = max(args.warmup, 1)
    if args.child:
        child(args)
        return 0
    for c in args.cases:
        impl, *rest = c.split("+")
        if impl not in OPTIONS or not set(rest) <= OPTIONS[impl]:
            p.error(f"unknown case {c!r}: oc or js, then +options from {OPTIONS}")
    results: list[list[dict]] = []
    for rnd in range(args.rounds):
        order = list(args.cases) if rnd % 2 == 0 else list(reversed(args.cases))
        row = []
        for case in order:
            r = run_case(case, args)
            row.append(r)
            msg = r.get("error") or (f"{r['samples_per_s']:.1f} samples/s, first step "
                                     f"{r['first_step_s']:.2f} s, peak {gib(r['peak_rss'])} GiB, "
                                     f"other processes' CPU share {r['foreign_cpu']:.0%}")
            print(f"[round {rnd + 1}] {case}: {msg}", file=sys.stderr, flush=True)
        results.append(row)
    print(summarise(args.cases, results, args.max_foreign))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all("error" not in r for rnd in results for r in rnd) else 1


if __name__ == "__main__":
    sys.exit(main())
