"""`make setup` and `make lab` register a Jupyter kernel named after the clone's path, so a second clone never
takes over the first one's kernel (they used to share the user-wide name `dst`)."""
import re
import shutil
import subprocess

import pytest


def _dry(root, target, cwd=None):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    r = subprocess.run(["make", "-n", "-f", str(root / "Makefile"), target], cwd=cwd or root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_kernel_name_is_per_clone(root, tmp_path):
    here = _dry(root, "lab")
    names = set(re.findall(r"ipykernel install --user --name (\S+)", here))
    assert len(names) == 1 and re.fullmatch(r"dst-\d+", names.pop())
    assert "--name dst " not in here
    (tmp_path / "settings.ini").write_text((root / "settings.ini").read_text())   # another clone: another path
    (tmp_path / "setup.py").write_text((root / "setup.py").read_text())
    there = _dry(root, "lab", cwd=tmp_path)
    assert set(re.findall(r"--name (dst-\d+)", there)) != set(re.findall(r"--name (dst-\d+)", here))
