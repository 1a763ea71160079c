"""A regular (non-editable) install from the wheel, as a user gets it: one import root.

Builds the wheel, installs it into a fresh virtual environment together with PyPI's `verify`
1.1.1 (a validation library whose top-level name is `verify`), then runs a user project that
has packages of its own called `reference`, `verify` and `golden` (with a `reference.config`,
the module our plugin once imported by the generic name) and a root conftest, whose tests use
both plugin fixtures and import their own packages. PyPI's `verify` must survive the install and
the uninstall of gpt2-verify, and nothing but `gpt2_verify` may land at the top of
site-packages.

It needs PyPI (the package registry CI can reach) for the third-party packages; when the
registry cannot be reached at all it is skipped with that reason, and any other failure fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# what the wheel is built from: the build's inputs, nothing of the working tree's debris
SOURCES = ("pyproject.toml", "README.md", "src", "verify", "reference", "golden")
THIRD_PARTY = ("verify==1.1.1", "numpy", "hypothesis", "pytest")

USER_PROJECT = {
    "conftest.py": "import verify  # their own package, imported by their root conftest\n",
    "reference/__init__.py": "OWNER = 'theirs'\n",
    "reference/config.py": "LAYERS = 3  # their own reference.config\n",
    "reference/init.py": """
        from gpt2_verify.reference.init import init_tensors


        def their_init(cfg, seed):
            # a user's port that happens to delegate to the reference: plumbing, not grading
            return init_tensors(cfg, seed)
        """,
    "verify/__init__.py": "OWNER = 'theirs'\n",
    "golden/__init__.py": "OWNER = 'theirs'\n",
    "tests/test_theirs.py": """
        import golden
        import reference
        import reference.config
        import verify
        from reference.init import their_init


        def test_their_packages_are_theirs():
            assert (reference.OWNER, verify.OWNER, golden.OWNER) == ("theirs",) * 3
            assert reference.config.LAYERS == 3


        def test_reference_fixture(gpt2_reference):
            ref = gpt2_reference("d6")
            assert ref["wte"].shape == (50304, 384) and ref["wte"].dtype.name == "float32"
            assert reference.config.LAYERS == 3


        def test_fuzz_fixture(gpt2_fuzz):
            result = gpt2_fuzz(their_init, examples=3, max_params=20_000, derandomize=True)
            assert result.failure is None
        """,
}


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, **kw)


def _check(res, what):
    tail = f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert res.returncode == 0, f"{what} failed ({res.returncode}):\n{tail}"
    return res


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src-copy"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    # pip's isolated build (pyproject's build-system requires) like any user's `pip install .`
    _check(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)]),
           "building the wheel")
    (wheel,) = dist.glob("gpt2_verify-*.whl")
    return wheel


def _venv(tmp_path: Path, wheel: Path) -> Path:
    env_dir = tmp_path / "venv"
    _check(_run([sys.executable, "-m", "venv", str(env_dir)]), "creating the venv")
    py = env_dir / "bin" / "python"
    third = _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *THIRD_PARTY])
    if third.returncode != 0 and any(s in third.stderr for s in ("NewConnectionError", "Temporary failure",
                                                                 "Network is unreachable")):
        pytest.skip(f"the package registry is unreachable: {third.stderr.strip().splitlines()[-1]}")
    _check(third, "installing " + " ".join(THIRD_PARTY))
    _check(_run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)]), "installing the wheel")
    return py


def _site_packages(py: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = _check(_run([str(py), "-c", code]), "purelib")
    return Path(out.stdout.strip())


def _user_project(root: Path) -> None:
    for rel, text in USER_PROJECT.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.mark.skipif(sys.platform == "win32", reason="venv layout (bin/python) is POSIX here")
def test_wheel_installs_under_one_root_beside_pypi_verify(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"gpt2_verify"}, tops
    with zipfile.ZipFile(wheel) as z:
        assert any(n.startswith("gpt2_verify/golden/") and n.endswith(".json") for n in z.namelist())
    py = _venv(tmp_path, wheel)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    site = _site_packages(py)

    assert not (site / "reference").exists() and not (site / "golden").exists()
    # PyPI's verify is whole: our install merged nothing into its folder
    assert not (site / "verify" / "cli").exists() and not (site / "verify" / "stats.py").exists()
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    _check(_run([str(py), "-c", "import verify; verify.Equal"], cwd=neutral, env=clean), "PyPI verify.Equal")

    # the console script, python -m, and golden data read through importlib.resources
    out = _check(_run([str(py.parent / "gpt2-verify"), "golden", "check", "tiny-L1-C2"], cwd=neutral,
                      env=clean), "gpt2-verify golden check").stdout
    assert "tiny-L1-C2" in out
    ver = _check(_run([str(py), "-m", "gpt2_verify", "--version"], cwd=neutral, env=clean),
                 "python -m").stdout
    assert ver.startswith("gpt2-verify ")

    project = tmp_path / "user-project"
    _user_project(project)
    res = _check(_run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                      env=clean), "the user project's tests")
    assert "3 passed" in res.stdout, res.stdout

    # uninstalling gpt2-verify leaves PyPI's verify intact
    _check(_run([str(py), "-m", "pip", "uninstall", "-y", "-q", "gpt2-verify"]), "uninstall")
    _check(_run([str(py), "-c", "import verify; verify.Equal"], cwd=neutral, env=clean),
           "verify after uninstall")
    assert not (site / "gpt2_verify").exists()

