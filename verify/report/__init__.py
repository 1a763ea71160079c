"""`gpt2-verify report`: one self-contained HTML report from model files and JSON records.

    build_report(inputs, *, output, png_dir=None, scheme="gpt2", overrides=(), title=..., progress=None)

Inputs, detected from the file: a JSON record by its "schema" (compare/1, gradflow/1, llmc/2,
ablate/1, bench/1; anything else is an error), an ablation run directory by its summary.json,
anything else as a model file (verify.formats.model.open_model: llm.c checkpoint, state dict,
safetensors, npz, Hugging Face directory), whose init state is streamed once
(verify.report.stream) and drawn against the expected law of every tensor
(reference.schemes). Figures are PNGs embedded as data: URIs and, with png_dir, also written as
files with stable names (init-NAME-histograms.png, compare-NAME-std-ratio.png, ...).

matplotlib (the `report` extra) is imported only when a figure is drawn; without it
build_report raises verify.report.figures.MatplotlibMissing.
"""

from .figures import MATPLOTLIB_MISSING, MatplotlibMissing
from .sections import ReportResult, build_report, expected_laws, write_pngs
from .stream import StreamHistogram, scan_model

__all__ = [
    "build_report",
    "ReportResult",
    "expected_laws",
    "write_pngs",
    "scan_model",
    "StreamHistogram",
    "MatplotlibMissing",
    "MATPLOTLIB_MISSING",
]
