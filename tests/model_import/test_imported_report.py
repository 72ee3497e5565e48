"""The report of an imported model says where it came from, that it trained no step here, and
that its training curves are absent (there is no run to draw)."""
from __future__ import annotations

import json
import re
import shutil

import jointspace
from jointspace.data.shapes import ShapesSpec, write_shapes
from jointspace.eval.report import describe_folder
from jointspace.eval.run import evaluate


def test_an_imported_models_report_names_its_source_and_has_no_training_curves(clip_source, tmp_path):
    model = jointspace.import_model(clip_source, tmp_path / "clip")
    assert json.loads((model / "imported.json").read_text()) == {
        "source": str(clip_source.resolve()), "family": "CLIP", "origin": None,
        "architectures": json.loads((clip_source / "config.json").read_text()).get("architectures") or []}
    data = write_shapes(tmp_path / "shapes", ShapesSpec(n=60, seed=3, fractions=(0.6, 0.2, 0.2)))
    evaluate(model, data["test"], out_dir=tmp_path / "eval", tasks=["retrieval", "zero_shot"])
    page = (tmp_path / "eval" / "report.html").read_text()
    head = page[:page.index("<section id='retrieval'")]
    assert re.search(r"<h1>clip: image ↔ text evaluation</h1>", head)
    assert f"<dd>imported from {clip_source.resolve()} (CLIP)</dd>" in head
    assert "<dt>training steps</dt><dd>none here (imported)</dd>" in head
    assert "Training curves: absent — the model was imported, not trained here." in page
    assert 'alt="training curves"' not in page

    # a folder imported before imported.json existed: its card says where it came from
    older = shutil.copytree(model, tmp_path / "older")
    (older / "imported.json").unlink()
    info = describe_folder(older)
    assert info.imported and info.source.startswith(f"imported from {clip_source.resolve()} (")
    assert info.steps is None and all(t.parameters for t in info.towers)
