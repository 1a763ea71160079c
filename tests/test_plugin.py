"""The pytest plugin loads in every project where gpt2-verify is installed: it must not break a
project that has packages of its own called `verify` or `reference`."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _project(root):
    for pkg in ("verify", "reference"):
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text(f"OWNER = 'theirs-{pkg}'\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_theirs.py").write_text(textwrap.dedent("""
        import reference
        import verify

        def test_their_own_packages():
            assert verify.OWNER == "theirs-verify"
            assert reference.OWNER == "theirs-reference"
    """))


def test_project_with_its_own_verify_and_reference_packages(tmp_path):
    _project(tmp_path)
    # `python -m pytest` puts the project directory first on sys.path, where a plugin that
    # imported `verify` at load time would pick up (or shadow) the project's package
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    # the plugin is loaded there: its fixture is listed
    fixtures = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "--fixtures", "tests"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert fixtures.returncode == 0, fixtures.stderr
    # both fixtures are listed with their docstrings (a fixture without one shows a bare name)
    listed = fixtures.stdout.split("gpt2_reference [session scope]", 1)[1]
    assert listed.splitlines()[1].strip().startswith("gpt2_reference(config, seed=42")
    assert listed.split("gpt2_fuzz", 1)[1].splitlines()[1].strip().startswith("gpt2_fuzz(candidate=None")


def test_reference_fixture_takes_schemes_and_caches(gpt2_reference):
    import numpy as np
    from gpt2_verify.reference.init import init_tensors

    from tests.known import SMALL

    ref = gpt2_reference(SMALL, 7, scheme="xavier-uniform", overrides=["wpe.std=0.01"])
    want = init_tensors(SMALL, 7, scheme="xavier-uniform", overrides=["wpe.std=0.01"])
    assert all(np.array_equal(ref[k], want[k]) for k in want)
    assert gpt2_reference(SMALL, 7, scheme="xavier-uniform", overrides=["wpe.std=0.01"]) is ref
    assert not np.array_equal(gpt2_reference(SMALL, 7)["wpe"], ref["wpe"])
