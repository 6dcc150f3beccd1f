"""The wheel ships the grammar (top-level grammars/ in the checkout) and the standard library inside the
package, so an installed dslc works from any directory."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True)
    if r.returncode != 0 and "No module named build" in r.stderr:
        pytest.skip("the `build` package is not installed (pip install -e '.[dev]')")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheels = list(out.glob("dslc-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_grammar_and_std(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "dslc/grammars/dslc.lark" in names
    for mod in ("resnet", "transformer", "unet", "mlp"):
        assert f"dslc/std/{mod}.net" in names
    assert not any(n.startswith("grammars/") for n in names), "the grammar must live inside the package"


def test_installed_wheel_checks_a_network_from_elsewhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    net = tmp_path / "net.net"
    net.write_text((ROOT / "networks" / "resnet18.net").read_text())
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("import dslc, sys; assert dslc.__file__.startswith(sys.argv[1]), dslc.__file__; "
            "from dslc.cli import main; sys.exit(main(['check', '--json', sys.argv[2]]))")
    r = subprocess.run([sys.executable, "-c", code, str(target), str(net)], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"trainable_params": 11689512' in r.stdout


def test_wheel_contains_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [str(p.relative_to(ROOT)) for p in (ROOT / "dslc").rglob("*.py")
               if "__pycache__" not in p.parts and str(p.relative_to(ROOT)) not in names]
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"
