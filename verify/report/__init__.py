"""`gpt2-verify report`: one self-contained HTML report from model files and JSON records.

    build_report(inputs, *, output, png_dir=None, scheme="gpt2", overrides=(), title=..., progress=None)

Inputs, detected from the file: a JSON record by its "schema" (verify.records: compare, fuzz,
checksum, stats, gradflow, llmc, ablate, ablate-run, bench; anything else is an error, and a
record that breaks its contract is one line naming the file and the field), an ablation run
directory by its summary.json, anything else as a model file (verify.formats.model.open_model:
llm.c checkpoint, state dict, safetensors, npz, Hugging Face directory), whose init state is
streamed once
(verify.report.stream) and drawn against the expected law of every tensor
(reference.schemes). Figures are PNGs embedded as data: URIs and, with png_dir, also written as
files with stable names (init-NAME-histograms.png, compare-NAME-std-ratio.png, ...).

matplotlib (the `report` extra) is imported only when a figure is drawn; without it
build_report raises verify.report.figures.MatplotlibMissing.
"""

import importlib

# what each public name is imported from, on first use: `import gpt2_verify.verify.report` (or
# its `inputs` module, which reads records through verify.records) loads no numpy, matplotlib
# or scheme code until a report is built
_EXPORTS = {
    "build_report": "sections",
    "ReportResult": "sections",
    "expected_laws": "sections",
    "write_pngs": "sections",
    "scan_model": "stream",
    "StreamHistogram": "stream",
    "MatplotlibMissing": "figures",
    "MATPLOTLIB_MISSING": "figures",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
