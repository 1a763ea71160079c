"""The tutorial notebook (docs/gpt2-init-tutorial.ipynb) runs top to bottom, so it never rots:
executed with nbclient (what `pytest --nbmake docs/` uses) in a fresh kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "gpt2-init-tutorial.ipynb"


def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    # one torch thread in the kernel and the commands it runs: beside the other test workers,
    # spinning OpenMP threads on an oversubscribed machine slow the ablation cell down 10x
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 4  # stream growth, the draw map, llmc vs torch, the ablation's curves
    text = "".join(o.get("text", "") for o in outputs)
    assert "bit-identical: True" in text and "4123659995 (the C++ standard" in text
    # `module`: the tanh-GELU model passes, the nn.GELU() one fails with its cause named
    assert "verdict: PASS" in text and "exact-erf GELU" in text and "(exit 1)" in text
