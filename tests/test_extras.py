"""The optional extras (issue 22 §2): the core trains, evaluates and embeds without Ray,
faiss, FastAPI/uvicorn or matplotlib; a feature whose extra is missing says which
``pip install 'jointspace[...]'`` adds it; the bulk embedder's old import path still
works, with a DeprecationWarning.

"Not installed" is played in a subprocess by a ``sys.meta_path`` finder that answers
each optional module as an absent one is answered (``ModuleNotFoundError`` naming it)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jointspace.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
#: every module an extra adds, and the ones they bring that the core must not need
OPTIONAL = sorted({m.split(".")[0] for _, modules in EXTRAS.values() for m in modules}
                  | {"multipart", "httptools", "uvloop", "starlette", "mpl_toolkits"})

BLOCK = f"""
import importlib.abc, sys
OPTIONAL = {OPTIONAL!r}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


def run_without_extras(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter where no optional module imports; it prints the
    optional modules imported after all as its last line (must be ``[]``)."""
    script = BLOCK + textwrap.dedent(code) + textwrap.dedent("""
        import sys
        print(sorted({m.split(".")[0] for m in sys.modules} & set(OPTIONAL)))
        """)
    env = {**os.environ, "JOINTSPACE_QUIET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    return done


def test_the_core_trains_evaluates_embeds_and_searches_without_the_extras(shapes_dir, tiny_overrides,
                                                                          tmp_path):
    """Every verb of the core, in one process with no optional module: train, eval
    (results.json, no report), embed (the units in this process: no Ray), index into the
    exact store, search."""
    run_without_extras("""
        import sys, json
        from pathlib import Path
        import jointspace, jointspace.train, jointspace.eval, jointspace.index, jointspace.bulk_embed
        from jointspace.cli import main
        data, overrides = Path(sys.argv[1]), json.loads(sys.argv[2])
        sets = [a for o in overrides for a in ("--set", o)]
        assert main(["train", "--data", str(data / "train.csv"), "--val", str(data / "val.csv"),
                     "--out", "m", *sets]) == 0
        assert main(["eval", "m", "--data", str(data / "test.csv"), "--no-report", "--out", "ev"]) == 0
        assert json.loads(Path("ev/results.json").read_text())["n"] > 0
        assert main(["embed", "m", "--data", str(data / "test.csv"), "--out", "emb"]) == 0
        assert main(["index", "m", "emb", "--collection", "col", "--store", "exact"]) == 0
        assert main(["search", "a red circle", "--collection", "col", "-k", "3"]) == 0
        assert sorted(p.name for p in Path("emb").glob("part-*.parquet")) == ["part-00000.parquet"]
        """, tmp_path, str(shapes_dir), json.dumps(tiny_overrides))


def test_a_feature_without_its_extra_names_the_pip_install(trained_model_dir, shapes_dir, tmp_path):
    """Each extra's feature, used without it, fails with a JointspaceError (the CLI's one
    line, status 2) that names ``pip install 'jointspace[<extra>]'``, before any work where
    it can (embed on Ray, index, serve); eval without [report] writes results.json and
    warns that report.html needs it."""
    done = run_without_extras("""
        import sys, contextlib, io
        from pathlib import Path
        from jointspace.bulk_embed import embed
        from jointspace.cli import main
        from jointspace.errors import JointspaceError
        from jointspace.extras import EXTRAS, MissingExtraError, require
        model, data = sys.argv[1], Path(sys.argv[2])

        def fails(extra, call):
            try:
                call()
            except MissingExtraError as e:
                assert isinstance(e, JointspaceError) and isinstance(e, ImportError), type(e)
                assert e.extra == extra and f"pip install 'jointspace[{extra}]'" in str(e), str(e)
                print(extra, "|", e)
                return
            raise AssertionError(f"no MissingExtraError for [{extra}]")

        def cli(extra, *argv):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                assert main(list(argv)) == 2
            assert f"pip install 'jointspace[{extra}]'" in err.getvalue(), err.getvalue()
            print(extra, "|", err.getvalue().strip())

        for extra, (_, modules) in EXTRAS.items():
            for module in modules:
                fails(extra, lambda: require(module, extra))
        fails("ray", lambda: embed(model, data / "test.csv", "emb-ray", use_ray=True))
        fails("ray", lambda: embed(model, data / "test.csv", "emb-ray", ray_address="ray://head:10001"))
        assert not Path("emb-ray").exists()  # said before anything was written
        cli("ray", "embed", model, "--data", str(data / "test.csv"), "--out", "emb-ray",
            "--ray-address", "ray://head:10001")
        fails("index", lambda: __import__("jointspace.index", fromlist=["build_collection"])
              .build_collection(model, data / "test.csv", "col-faiss"))
        cli("index", "index", model, str(data / "test.csv"), "--collection", "col-faiss-cli")
        fails("serve", lambda: __import__("jointspace.serve"))
        cli("serve", "serve", "--collection", "col-faiss-cli")
        assert not Path("col-faiss").exists() and not Path("col-faiss-cli").exists()  # nothing written
        import logging
        warned = io.StringIO()
        logging.getLogger("jointspace").addHandler(logging.StreamHandler(warned))
        assert main(["eval", model, "--data", str(data / "test.csv"), "--out", "ev"]) == 0
        assert Path("ev/results.json").is_file() and not Path("ev/report.html").exists()
        print("report", "|", warned.getvalue().strip())
        """, tmp_path, str(trained_model_dir), str(shapes_dir))
    said = dict(line.split(" | ", 1) for line in done.stdout.splitlines() if " | " in line)
    # eval without [report]: the metrics and results.json, and a warning naming the install
    assert "pip install 'jointspace[report]'" in said["report"], said
    assert "--store exact" in said["index"], said
    assert "ray is not installed" in said["ray"], said  # the package missing, not ray.data


def test_the_old_import_path_of_the_bulk_embedder_warns_and_gives_the_same_objects(tmp_path):
    code = textwrap.dedent("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import jointspace.embed as old
            from jointspace.embed import EmbedReport, _run_on_ray, embed, embed_unit
        import jointspace.bulk_embed as new
        assert (embed, embed_unit, EmbedReport) == (new.embed, new.embed_unit, new.EmbedReport)
        assert _run_on_ray is new._run_on_ray and old.INFO_FILE == new.INFO_FILE  # forwarded
        assert set(old.__all__) == set(new.__all__)
        [w] = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        assert "jointspace.bulk_embed" in str(w.message), w.message
        assert w.filename == "<string>", w.filename  # the importer's line, not the shim's
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_pyproject_installs_each_extra_and_the_core_none_of_them():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements):
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for r in requirements}
    optional = names(r for e in EXTRAS for r in extras[e]) - {"jointspace"}
    assert optional >= {"ray", "faiss-cpu", "fastapi", "uvicorn", "matplotlib", "fastapi-offline",
                        "python-multipart"}
    assert not optional & names(project["dependencies"]), "an extra's package is in the core"
    assert set(EXTRAS) <= set(extras)
    assert extras["all"] == [f"jointspace[{','.join(EXTRAS)}]"]
    assert "jointspace[all]" in extras["test"]  # make test installs everything


def test_optional_modules_are_imported_only_through_require():
    """Outside ``jointspace/serve`` (whose ``__init__`` requires its extra before any of its
    modules imports FastAPI) no module imports an optional package itself: each goes
    through :func:`~jointspace.extras.require`, which names the extra."""
    package = ROOT / "jointspace"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "serve" and path.name != "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                      if n.split(".")[0] in OPTIONAL]
    assert not found, "import these with jointspace.extras.require:\n" + "\n".join(found)


def test_require_names_a_missing_dependency_and_passes_a_broken_install_through(tmp_path, monkeypatch):
    """A module whose own dependency is missing names both (the extra installs it); one
    that fails to import for another reason (a broken build) is not blamed on the extra."""
    for name, body in (("lacks_a_dependency", "import no_such_dependency_here\n"),
                       ("broken_build", "raise ImportError('undefined symbol: foo')\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"^no_such_dependency_here \(needed by lacks_a_dependency\) "
                                                r"is not installed .*pip install 'jointspace\[index\]'"):
        require("lacks_a_dependency", "index")
    with pytest.raises(ImportError, match="undefined symbol") as caught:
        require("broken_build", "index")
    assert not isinstance(caught.value, MissingExtraError)
    with pytest.raises(ValueError, match="unknown extra"):
        require("json", "gpu")
