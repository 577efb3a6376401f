"""The repository's own contract: settings.ini is the single source of requirements, environment.yml mirrors
it, and the README's two commands are what CI and users run."""
import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _settings(root):
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(root / "settings.ini")
    return cfg["DEFAULT"]


def _env_pip(root):
    """The pip requirements listed in environment.yml (a tiny parser: the file is plain YAML lists)."""
    lines = (root / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if re.match(r"\s+- pip:\s*$", l))
    reqs = []
    for l in lines[start + 1:]:
        m = re.match(r"\s{6,}- (.+?)\s*$", l)
        if not m:
            break
        reqs.append(m.group(1))
    return reqs


def test_environment_yml_mirrors_settings_ini(root):
    s = _settings(root)
    want = s["requirements"].split() + s["dev_requirements"].split()
    got = [r for r in _env_pip(root) if r != "-e ."]
    assert got == want, "environment.yml's pip list must equal settings.ini's requirements + dev_requirements"
    assert "-e ." in _env_pip(root)
    py = re.search(r"- python=(\d+\.\d+)", (root / "environment.yml").read_text()).group(1)
    assert tuple(map(int, py.split("."))) >= tuple(map(int, s["min_python"].split(".")))


def test_design_card_packages_are_required(root):
    names = {re.split(r"[<>=!~]", r)[0].lower() for r in _settings(root)["requirements"].split()}
    assert {"torch", "jupyterlab", "papermill", "ipywidgets", "seaborn", "opencv-python"} <= names
    assert "nbdev<3" in _settings(root)["dev_requirements"].split()


def test_layout_and_readme_commands(root):
    for p in ["nbs", "dst", "data_manifests", "tests", "settings.ini", "environment.yml", "Makefile", "README.md",
              ".ci/run", ".gitignore", "setup.py"]:
        assert (root / p).exists(), p
    readme = (root / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert re.search(r"^make test", (root / ".ci/run").read_text(), re.M), "CI must run the README's test command"


def _make_plan(root, target):
    """The commands `make TARGET` would run on a fresh clone: a dry run with every prerequisite out of date."""
    r = subprocess.run(["make", "-n", "-B", "-C", str(root), target], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [l for l in r.stdout.splitlines() if not l.startswith("make")]


@pytest.mark.parametrize("target, runs", [("demo", [r"/dst demo\b"]),
                                          ("test", [r"/dst dev check-sync\b", r"/ruff check dst tests\b", r"nbdev_test --path \.", r"/pytest tests\b"])])
def test_each_command_sets_up_then_runs(root, target, runs):
    plan = _make_plan(root, target)
    first = lambda pat: next((i for i, l in enumerate(plan) if re.search(pat, l)), None)
    torch, editable = first(r"pip install .*torch==2\.13\.0"), first(r"pip install .*-e \"?\.")
    assert torch is not None and editable is not None and torch < editable, \
        "torch must be pinned (the local CPU wheel) before the editable install can pull a CUDA build:\n" + "\n".join(plan)
    steps = [first(p) for p in runs]
    assert None not in steps and steps == sorted(steps) and steps[0] > editable, (runs, plan)


def test_tags_survive_nbdev_clean(root):
    """papermill needs the `parameters` cell tag, which nbdev_clean drops unless settings.ini keeps `tags`."""
    assert "tags" in _settings(root)["allowed_cell_metadata_keys"].split()


def test_console_script_and_module_agree():
    dst = str(Path(sys.executable).parent / "dst")  # the console script installed beside this Python
    a = subprocess.run([dst, "--help"], capture_output=True, text=True)
    b = subprocess.run([sys.executable, "-m", "dst", "--help"], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_cli_error_is_one_line(capsys):
    from dst.cli import main
    from dst.core import DSTError
    import dst.devtools as dv

    def boom(root=None):
        raise DSTError("settings.ini: expected [DEFAULT] section")
    orig, dv.check_sync = dv.check_sync, boom
    try:
        assert main(["dev", "check-sync"]) == 2
    finally:
        dv.check_sync = orig
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dst dev: error: settings.ini: expected [DEFAULT] section"]


# The import graph flows one way (issue 14): each module may import its own floor and the floors below it,
# never one above; function-local imports count too, since they are how back-edges hide.
FLOORS = [{"dst", "dst.core"}, {"data"}, {"models"}, {"distill"}, {"train"}, {"select"}, {"track"}, {"eval"},
          {"runs", "report", "site", "pipeline", "explore", "demo", "devtools"}, {"cli", "__main__"}]


def _floor(module):
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "dst"
    for i, floor in enumerate(FLOORS):
        if key in floor or module in floor:
            return i
    raise AssertionError(f"{module}: no floor in FLOORS (add its package to the test's table)")


def _dst_imports(path, module):
    """Every dst module `module` (the file at `path`) imports, anywhere in the file."""
    import ast
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module
            if base and base.split(".")[0] == "dst":
                root = path.parents[len(package) - 1]   # the folder of the package `dst`
                subs = [f"{base}.{a.name}" for a in node.names if (root / Path(*f"{base}.{a.name}".split(".")[1:])).with_suffix(".py").is_file()]
                yield from (subs or [base])
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "dst")


def test_imports_flow_one_way():
    root = Path(__file__).resolve().parents[1] / "dst"
    back = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "_modidx.py":
            continue
        module = ".".join(("dst",) + path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for target in _dst_imports(path, module):
            if _floor(target) > _floor(module):
                back.append(f"{module} -> {target}")
    assert back == [], "imports from a higher floor (see FLOORS): " + ", ".join(back)


def test_the_floor_check_sees_a_back_edge(tmp_path):
    """The check above is not vacuous: a data module importing the pipeline inside a function is caught."""
    (tmp_path / "data").mkdir()
    p = tmp_path / "data" / "bad.py"
    p.write_text("def f():\n    from ..pipeline import budget\n    from dst.cli import main\n")
    (tmp_path / "pipeline.py").write_text("")
    targets = list(_dst_imports(p, "dst.data.bad"))
    assert targets == ["dst.pipeline", "dst.cli"]
    assert [_floor(t) > _floor("dst.data.bad") for t in targets] == [True, True]


def test_gpu_scripts_are_valid_bash():
    """Issue 12's prepared GPU run: the two scripts parse, are executable, and run the medium scale."""
    root = Path(__file__).resolve().parents[1]
    for name in ("gpu-prepare", "gpu-medium"):
        p = root / ".ci" / name
        assert p.stat().st_mode & 0o111, f"{p} is not executable"
        r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert "dst run all --scale medium" in (root / ".ci" / "gpu-medium").read_text()


def test_the_parser_leaves_the_notebook_stack_unloaded():
    "Every `dst` command builds the whole parser; nbformat and nbconvert take seconds to import, so only the commands that use them load them."
    code = "import sys; from dst.cli import build_parser; build_parser(); print(sorted(m for m in ('nbformat', 'nbconvert', 'papermill') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout
