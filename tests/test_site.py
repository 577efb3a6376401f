"""The offline documentation build (`dst dev docs`, `make docs`): real notebooks executed into a site whose index
links every page, math drawn as MathML, figures embedded, navigation that resolves, failures reported."""
import json
import re
import shutil
import subprocess

import nbformat
import pytest

from dst.cli import main
from dst.core import DSTError
from dst.site import build_docs, build_site

SUBSET = ["00_core.ipynb", "34_vc_bound.ipynb"]  # no math / no figures, and math-heavy with figures


@pytest.fixture(scope="module")
def site(tmp_path_factory, root):
    """The docs of a small real subset, executed (about 10 s)."""
    out = tmp_path_factory.mktemp("site")
    idx = build_docs(out, nbs=root / "nbs", only=SUBSET, progress=False, strict=True, n_workers=2)
    return idx, json.loads((out / "site.json").read_text())


def _hrefs(html):
    return re.findall(r'href="([^"]+)"', html)


def test_index_links_every_page(site):
    idx, info = site
    assert idx.name == "index.html" and idx.exists()
    assert [p["slug"] for p in info["pages"]] == ["00_core", "34_vc_bound"]
    assert all(p["executed"] and p["error"] is None for p in info["pages"]) and info["failed"] == []
    links = _hrefs(idx.read_text())
    for p in info["pages"]:
        assert f'{p["slug"]}.html' in links
        assert (idx.parent / f'{p["slug"]}.html').exists()
    assert "<h2>Library</h2>" in idx.read_text()


def test_math_is_mathml_and_figures_are_embedded(site):
    idx, info = site
    page = (idx.parent / "34_vc_bound.html").read_text()
    vc = info["pages"][1]
    assert vc["title"] == "Why TSsKD works: the VC-bound argument"
    assert vc["math"] > 40 and info["math_failed"] == 0 and page.count("<math") == vc["math"]
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in page
    assert '<img src="data:image/png;base64,' in page and vc["figures"] >= 1
    prose = re.findall(r'<div class="cell md">(.*?)</div>\n', page, re.S)
    assert prose and not any("$$" in p or re.search(r"\$\\", p) for p in prose), "LaTeX left in rendered prose"
    assert "from fastcore.test import" not in page  # the `#| hide` imports cell
    core = (idx.parent / "00_core.html").read_text()
    assert '<span class="tag">exported</span>' in core and "#| export" not in core and "default_exp" not in core
    assert info["pages"][0]["figures"] == 0 and "<img" not in core


def test_navigation_resolves_and_nothing_is_fetched(site):
    idx, info = site
    for f in idx.parent.glob("*.html"):
        html = f.read_text()
        for h in _hrefs(html):
            if h.startswith("#"):
                continue
            assert not h.startswith(("http:", "https:", "//")), f"{f.name} links outside: {h}"
            assert (idx.parent / h.split("#")[0]).exists(), f"{f.name}: dead link {h}"
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?:', html), f"{f.name} loads a remote asset"
    page = (idx.parent / "34_vc_bound.html").read_text()
    assert 'href="00_core.html">← Core</a>' in page and 'href="index.html">Index</a>' in page


def _nb(tmp, rel, *cells):
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=list(cells)), p)
    return p


def test_failed_notebook_gets_a_page_and_a_nonzero_exit(tmp_path, capsys):
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    _nb(tmp_path, "nbs/00_ok.ipynb", md("# Fine\n\n> Works, $a+b$."), code("print('hello')"))
    _nb(tmp_path, "nbs/01_bad.ipynb", md("# Broken"), code("x = 1"), code("raise KeyError('missing_key')"))
    rc = main(["dev", "docs", "--nbs", str(tmp_path / "nbs"), "--out", str(tmp_path / "site")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out.splitlines()[-1] == "2 pages (2 executed), 1 math expressions (0 failed), 0 figures, 1 notebooks failed"
    assert "failed to execute: nbs/01_bad.ipynb: KeyError: 'missing_key'" in err
    bad = (tmp_path / "site" / "01_bad.html").read_text()
    assert "This notebook failed to execute" in bad and "missing_key" in bad and 'class="out error"' in bad
    assert "hello" in (tmp_path / "site" / "00_ok.html").read_text()
    assert "(failed to execute)" in (tmp_path / "site" / "index.html").read_text()
    assert main(["dev", "docs", "--nbs", str(tmp_path / "nbs"), "--out", str(tmp_path / "site"), "--keep-going",
                 "--only", "01_*"]) == 0
    with pytest.raises(DSTError, match=r"1 notebook\(s\) failed to execute.*01_bad.ipynb: KeyError"):
        build_site([tmp_path / "nbs" / "01_bad.ipynb"], tmp_path / "strict", strict=True, progress=False)


def test_papermill_notebooks_use_the_run_folder(tmp_path, root):
    """Stage and paper notebooks are never executed by the docs build; a run folder's executed copies replace them."""
    papers = sorted((root / "nbs" / "paper").glob("[!_.]*.ipynb"))
    if not papers:
        pytest.skip("no nbs/paper notebooks yet")
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    nb = nbformat.read(papers[0], as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output("stream", name="stdout",
                                                                                   text="OUTPUT-FROM-THE-RUN\n")]))
    nbformat.write(nb, run / "report" / papers[0].name)
    idx = build_docs(tmp_path / "site", nbs=root / "nbs", only="paper/*", run_report=run / "report", progress=False)
    info = json.loads((idx.parent / "site.json").read_text())
    assert len(info["pages"]) == len(papers) and not any(p["executed"] for p in info["pages"])
    first = (idx.parent / f"paper-{papers[0].stem}.html").read_text()
    assert "OUTPUT-FROM-THE-RUN" in first and "Outputs from the pipeline run" in first
    if len(papers) > 1:
        assert "needs a pipeline run" in (idx.parent / f"paper-{papers[1].stem}.html").read_text()
    assert all(p["group"] == "The paper, rendered" for p in info["pages"])


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    assert main(["dev", "docs", "--out", str(tmp_path / "s"), "--run", str(tmp_path / "no_such_run")]) == 2
    assert "no_such_run: run folder not found" in capsys.readouterr().err
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "broken.ipynb").write_text("{not json")
    with pytest.raises(DSTError, match="broken.ipynb: not a readable notebook"):
        build_docs(tmp_path / "s", nbs=tmp_path / "nbs", progress=False)


def test_chromium_renders_the_index(site):
    """Optional: a headless Chromium loads the index and sees every page link (skipped where it is not installed)."""
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        pytest.skip("no chromium on PATH (Debian package `chromium`); the HTML checks above still ran")
    idx, info = site
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", idx.as_uri()],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(f'{p["slug"]}.html' in r.stdout for p in info["pages"])
