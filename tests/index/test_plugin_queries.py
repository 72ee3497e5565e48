"""Queries ask the modality plug-ins: an item is checked by its plug-in, search takes any
registered modality by its name (text=, image=, audio= as before), and the warm-up's items
are the plug-ins' samples."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jointspace.errors import JointspaceError
from jointspace.index import Term, build_collection
from jointspace.index.query import file_problem
from jointspace.index.search import query_terms
from jointspace.modalities import MODALITIES, Modality


def test_each_built_in_sample_passes_the_check_a_query_gets(tmp_path):
    samples = {name: MODALITIES.get(name).sample(tmp_path) for name in ("image", "audio", "text")}
    assert samples["image"].name == "warm-up.jpg" and samples["audio"].name == "warm-up.wav"
    for name, item in samples.items():
        assert file_problem(name, item) is None, name
        MODALITIES.get(name).decode(item, where="sample")
    assert Modality().sample(tmp_path) is None  # a plug-in without one is not warmed up


def test_an_item_is_checked_by_its_plug_in(tmp_path):
    assert file_problem("text", "  ") == "the text is empty"
    assert file_problem("text", "a red circle") is None
    assert "silent" in file_problem("audio", np.zeros(16_000, np.float32))
    assert file_problem("image", Image.new("RGB", (4, 4))) is None  # not a path: not decoded
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert "cannot be decoded" in file_problem("image", tmp_path / "bad.png")
    assert file_problem("vector", [1.0, 2.0]) is None  # no plug-in: the search checks it


def test_search_keywords_become_terms_in_the_order_of_earlier_versions():
    terms = query_terms({"text": "red", "image": None, "audio": "a.wav"}, vector=[1.0])
    assert [(t.modality, t.value) for t in terms] == [("text", "red"), ("audio", "a.wav"),
                                                      ("vector", [1.0])]
    with pytest.raises(TypeError, match="unexpected keyword argument .txt. .*: .*text"):
        query_terms({"txt": "red"})


def test_search_takes_any_registered_modality_by_its_name(trained_model_dir, shapes_dir, tmp_path):
    col = build_collection(trained_model_dir, shapes_dir / "test.csv", tmp_path / "col")
    by_keyword = col.search(text="a red circle", k=5)
    assert [h.item["id"] for h in col.search(**{"text": "a red circle"}, k=5)] == \
        [h.item["id"] for h in by_keyword]
    assert [h.item["id"] for h in col.search(terms=[Term("text", "a red circle")], k=5)] == \
        [h.item["id"] for h in by_keyword]
    with pytest.raises(TypeError, match="unexpected keyword argument 'txt'"):
        col.search(txt="a red circle")
    with pytest.raises(JointspaceError, match="no 'audio' tower"):
        col.search(audio="x.wav")
    assert col.warm_up() > 0
