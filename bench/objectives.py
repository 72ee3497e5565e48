"""Benchmark: blockwise InfoNCE / sigmoid losses vs OpenCLIP's ClipLoss / SigLipLoss.

Forward + backward on random unit vectors (float32), each case in a fresh
subprocess so its peak RSS (``getrusage`` max RSS of that child) is its own.
Ours and OpenCLIP run in the same invocation, so the ratios are comparable even
though absolute speed drifts on shared machines (see ../shared/BASELINES.md, relative to the repository root).

    python bench/objectives.py                       # B = 4096 16384, d = 512
    python bench/objectives.py --batch 4096 16384 32768 65536 --repeats 2
    python bench/objectives.py --log-scale 4.605     # scale 100 (trained-CLIP regime)

OpenCLIP cases whose full-matrix buffers would not fit in the available memory
are skipped and reported as such. OpenCLIP 3.3.0's ``loss.py`` is loaded by
file path (``import open_clip`` would need torchvision); install it with
``pip install --no-deps open-clip-torch==3.3.0``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
# Full-matrix B×B float32 buffers each OpenCLIP loss holds at its peak (fwd+bwd), measured.
OPENCLIP_MATRICES = {"clip": 4.0, "siglip": 5.0}


def load_openclip_loss():
    """OpenCLIP's ``loss`` module, loaded by path (the package __init__ needs torchvision)."""
    import importlib.metadata
    import importlib.util

    try:
        path = importlib.metadata.distribution("open-clip-torch").locate_file("open_clip/loss.py")
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError("open-clip-torch is not installed: "
                           "pip install --no-deps open-clip-torch==3.3.0") from exc
    spec = importlib.util.spec_from_file_location("openclip_loss", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> None:
    """Run one case and print a JSON line with its timings and peak RSS."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    impl, kind = args.case.split(":")
    if impl == "openclip":
        mod = load_openclip_loss()
        loss_fn = mod.ClipLoss() if kind == "clip" else mod.SigLipLoss()

        def run(a, b, ls, lb):
            scale = ls.exp()
            return loss_fn(a, b, scale) if kind == "clip" else loss_fn(a, b, scale, lb)
    else:
        from jointspace.objectives.infonce import InfoNCE
        from jointspace.objectives.sigmoid import SigmoidLoss

        obj = InfoNCE(block_size=args.block_size) if kind == "clip" \
            else SigmoidLoss(block_size=args.block_size)

        def run(a, b, ls, lb):
            return obj(a, b, ls, lb)

    def inputs(n: int):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, args.dim, generator=g)
        b = torch.randn(n, args.dim, generator=g)
        a.div_(a.norm(dim=1, keepdim=True))
        b.div_(b.norm(dim=1, keepdim=True))
        default = math.log(1 / 0.07) if kind == "clip" else math.log(10.0)
        ls = torch.tensor(args.log_scale if args.log_scale is not None else default,
                          requires_grad=True)
        lb = torch.tensor(-10.0, requires_grad=True)
        return a.requires_grad_(), b.requires_grad_(), ls, lb

    def step(tensors):
        t0 = time.perf_counter()
        loss = run(*tensors)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        return float(loss), t1 - t0, t2 - t1

    batch = args.batch[0]
    step(inputs(512))  # warm up kernels and thread pools outside the measurement
    tensors = inputs(batch)
    runs = []
    for _ in range(args.repeats):
        for t in tensors:
            t.grad = None
        runs.append(step(tensors))
    loss, fwd, bwd = min(runs, key=lambda r: r[1] + r[2])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"case": args.case, "batch": batch, "loss": loss, "fwd": fwd,
                      "bwd": bwd, "total": fwd + bwd, "rss_gib": rss / GIB,
                      "threads": torch.get_num_threads()}))


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def run_case(case: str, batch: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--case", case, "--batch", str(batch),
           "--dim", str(args.dim), "--repeats", str(args.repeats)]
    for flag in ("threads", "block_size", "log_scale"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--objective", choices=["clip", "siglip", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=1, help="timed iterations (min is kept)")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's default")
    parser.add_argument("--block-size", type=int, default=None, help="default: automatic")
    parser.add_argument("--log-scale", type=float, default=None,
                        help="log temperature scale (default: log(1/0.07) clip, log(10) siglip)")
    parser.add_argument("--max-mem-gib", type=float, default=None,
                        help="skip OpenCLIP cases needing more (default: 80%% of MemAvailable)")
    parser.add_argument("--no-openclip", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    limit = (args.max_mem_gib * GIB if args.max_mem_gib else 0.8 * available_bytes())
    kinds = ["clip", "siglip"] if args.objective == "both" else [args.objective]
    print(f"d={args.dim} float32 fwd+bwd, {os.cpu_count()} CPUs, repeats={args.repeats}, "
          f"OpenCLIP memory limit {limit / GIB:.1f} GiB")
    header = (f"{'objective':9} {'B':>6} | {'ours s':>7} {'ours GiB':>8} | {'OpenCLIP s':>10} "
              f"{'OpenCLIP GiB':>12} | {'time ratio':>10} {'mem ratio':>9}")
    print(header)
    print("-" * len(header))
    for batch in args.batch:
        for kind in kinds:
            ours = run_case(f"ours:{kind}", batch, args)
            need = OPENCLIP_MATRICES[kind] * batch * batch * 4 + 0.4 * GIB
            if args.no_openclip:
                ref = {"skipped": "--no-openclip"}
            elif need > limit:
                ref = {"skipped": f"needs ~{need / GIB:.0f} GiB > {limit / GIB:.0f} GiB available"}
            else:
                ref = run_case(f"openclip:{kind}", batch, args)
            name = "infonce" if kind == "clip" else "sigmoid"
            if "error" in ours:
                print(f"{name:9} {batch:>6} | ours failed: {ours['error']}")
                continue
            row = f"{name:9} {batch:>6} | {ours['total']:7.2f} {ours['rss_gib']:8.2f} | "
            if "total" in ref:
                if abs(ours["loss"] - ref["loss"]) > 1e-4 * max(1.0, abs(ref["loss"])):
                    row += f"(loss mismatch {ours['loss']:.6f} vs {ref['loss']:.6f}) "
                row += (f"{ref['total']:10.2f} {ref['rss_gib']:12.2f} | "
                        f"{ours['total'] / ref['total']:10.2f} {ours['rss_gib'] / ref['rss_gib']:9.3f}")
            else:
                row += f"OpenCLIP {ref.get('skipped') or 'failed: ' + ref.get('error', '?')}"
            print(row, flush=True)
            detail = f"    ours fwd {ours['fwd']:.2f}s bwd {ours['bwd']:.2f}s"
            if "total" in ref:
                detail += f"; OpenCLIP fwd {ref['fwd']:.2f}s bwd {ref['bwd']:.2f}s"
            print(detail, flush=True)


if __name__ == "__main__":
    main()
