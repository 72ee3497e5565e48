"""`jointspace search --where`: a field no item has exits 2 with one line naming the fields
there are; a valid search with no hits says "0 results"."""
import pytest

from jointspace.cli import main
from jointspace.index import index_source


@pytest.fixture(scope="module")
def col(trained_model_dir, shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-filters") / "col"
    index_source(out, trained_model_dir, shapes_dir / "test.csv")
    return out


def test_an_unknown_where_field_exits_2_naming_the_known_fields(col, capsys):
    assert main(["search", "--collection", str(col), "a red circle", "--where", "colour=red"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "'colour'" in lines[0] and "label" in lines[0], captured.err
    assert captured.out == ""


def test_no_hits_prints_0_results(col, capsys):
    assert main(["search", "--collection", str(col), "a", "--where", "label=no such label"]) == 0
    assert capsys.readouterr().out.strip() == "0 results"
    assert main(["search", "--collection", str(col), "a", "--where", "label=no such label",
                 "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
