"""``compare``: how alike two models' spaces are on the same inputs.

Both models embed the same manifest rows (each with its own embedding cache
in the output folder); for every modality they share, or the ones asked for,
:func:`~.similarity.compare_spaces` measures mutual k-NN alignment, linear
CKA and cross-space retrieval through an orthogonal map. The models may
differ in embedding size. ``results.json`` holds, per modality::

    {"<modality>": {"mutual_knn@10": …, "linear_cka": …,
                    "procrustes": {"R@1", "R@5", "R@10", "n_test", "fit_residual"}}}

(chance Procrustes R@1 is ``1 / n_test``.)
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..data.manifest import OnBadRow, column_advice, manifest_columns, read_manifest
from ..errors import ConfigError
from ..fileio import atomic_write_json, atomic_write_text
from ..model import JointModel, load, resolve_device
from .embed import embed_manifest
from .report import REPORT_FILE, STYLE, html_table
from .run import RESULTS_FILE
from .similarity import compare_spaces


def compare(model_a: str | Path, model_b: str | Path, manifest: str | Path, *,
            modalities: Sequence[str] | None = None, out_dir: str | Path | None = None,
            k: int = 10, seed: int = 0, device: str = "auto", batch_size: int = 256,
            on_bad_row: OnBadRow = "skip",
            columns: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Compare the spaces of two model folders on ``manifest``'s rows.

    ``modalities`` defaults to every modality both models have a tower for and
    the manifest has a column for. With ``out_dir``: ``results.json``,
    ``report.html`` and both models' embedding caches there (without it nothing
    is written; ``jointspace compare`` defaults to ``MODEL_A/compare-<B's name>``,
    see :func:`default_out`). ``k`` (mutual k-NN's neighbours) must be in
    ``[1, N − 1]`` for the ``N`` rows compared, which must be at least 4 (half fit
    the Procrustes map, half test it): a :class:`ConfigError` otherwise, raised
    before anything is embedded.

    >>> compare("runs/a", "runs/b", "shapes/test.csv", out_dir="runs/a_vs_b")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if k < 1:
        raise ConfigError(f"k (-k) must be at least 1: the neighbours mutual k-NN compares; got {k}")
    models: list[JointModel] = [load(m).to(resolve_device(device)) for m in (model_a, model_b)]
    shared = [m for m in models[0].towers if m in models[1].towers]
    if modalities is None:
        header = manifest_columns(manifest)
        modalities = [m for m in shared if (columns or {}).get(m, m) in header]
        if not modalities and shared:
            wanted = {m: (columns or {}).get(m, m) for m in shared}
            raise ConfigError(f"manifest {manifest} has no column for the modalities both models "
                              f"have ({', '.join(shared)}; columns: {', '.join(header) or 'none'}) — "
                              + column_advice(manifest, header, wanted))
    missing = [m for m in modalities if m not in shared]
    if missing or not modalities:
        raise ConfigError(f"both models need a tower for each compared modality; shared: "
                          f"{', '.join(shared) or 'none'}, asked for: {', '.join(modalities) or 'none'}")
    data = read_manifest(manifest, required=tuple(modalities), on_bad_row=on_bad_row,
                         columns=columns, quarantine_dir=out_dir)
    if len(data) < 4:
        raise ConfigError(f"compare needs at least 4 valid rows (half fit the Procrustes map, half "
                          f"test it); {manifest} has {len(data)}")
    if k > len(data) - 1:
        raise ConfigError(f"k (-k) is {k}, but each of the {len(data)} rows compared has only "
                          f"{len(data) - 1} others; choose k well below that (at k = {len(data) - 1} "
                          "every row's neighbours are all the others, in any two spaces)")
    results: dict[str, Any] = {"model_a": str(model_a), "model_b": str(model_b),
                               "manifest": str(manifest), "n": len(data),
                               "quarantined": len(data.bad_rows)}
    for modality in modalities:
        x, y = (embed_manifest(model, data, [modality], batch_size=batch_size,
                               cache_dir=out_dir).embeddings[modality] for model in models)
        results[modality] = compare_spaces(x, y, k=k, seed=seed)
    results["seconds"] = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / RESULTS_FILE, results)
        _write_report(Path(out_dir), results, modalities)
    return results


def default_out(model_a: str | Path, model_b: str | Path) -> Path:
    """Where ``jointspace compare`` writes without ``--out``: ``MODEL_A/compare-<B's folder
    name>`` (as ``eval`` writes to ``MODEL/eval``).

    >>> default_out("runs/a", "runs/b")
    PosixPath('runs/a/compare-b')
    """
    return Path(model_a) / f"compare-{Path(model_b).resolve().name}"


def _write_report(out_dir: Path, results: dict[str, Any], modalities: Sequence[str]) -> Path:
    rows = []
    for m in modalities:
        r = results[m]
        knn = next(key for key in r if key.startswith("mutual_knn"))
        p = r["procrustes"]
        rows.append([m, r[knn], r["linear_cka"], p["R@1"], p["R@5"], p["R@10"], 1 / p["n_test"]])
    parts = [f"<h1>jointspace compare</h1><p><code>{html.escape(results['model_a'])}</code> vs "
             f"<code>{html.escape(results['model_b'])}</code> on {results['n']} rows of "
             f"<code>{html.escape(results['manifest'])}</code>.</p>",
             html_table(rows, ["modality", "mutual k-NN", "linear CKA", "Procrustes R@1", "R@5", "R@10",
                           "chance R@1"]),
             "<p>Mutual k-NN: the share of each item's nearest neighbours the two spaces agree "
             "on (1: the same up to rotation and scale). Linear CKA: 1 for spaces equal up to "
             "rotation and isotropic scale. Procrustes: an orthogonal map fitted on half the "
             "items; each mapped item of the other half retrieves its counterpart.</p>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>jointspace compare</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(out_dir / REPORT_FILE, page)
