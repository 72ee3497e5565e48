"""Filters over HTTP: a field no item has is a 400 naming the fields a client may filter on
(never those the server keeps to itself); a search with no hits is a 200 with none."""
import pytest
from fastapi.testclient import TestClient

from jointspace.serve import create_app


@pytest.fixture(scope="module")
def client(col_dir):
    return TestClient(create_app(col_dir))


def test_an_unknown_filter_field_is_a_400_naming_the_known_ones(client):
    for send in (lambda w: client.post("/search", json={"text": "a", "where": w}),
                 lambda w: client.post("/search/upload", data={"text": "a", "where": __import__(
                     "json").dumps(w)})):
        r = send({"colour": "red"})
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "'colour'" in detail and "no item has" in detail
        assert "label" in detail and "modality" in detail and "id" in detail  # a metadata key
        for hidden in ("path", "source", "key"):  # GET /items/{id} leaves these out too
            assert hidden not in detail.replace("a metadata key", ""), detail
    # a known field whose value matches nothing: no hits, not an error
    r = client.post("/search", json={"text": "a", "where": {"label": "no such label"}})
    assert r.status_code == 200 and r.json()["hits"] == []
    assert client.get("/healthz").json()["status"] == "ok"
