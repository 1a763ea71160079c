"""Grade anyone's initialized GPT-2 weights against the reference of any init scheme (exact /
close / distribution / mismatch), say where and why they differ, and fuzz implementations through Hypothesis.

    from gpt2_verify.verify.compare import compare
    from gpt2_verify.verify.formats.model import open_model

    report = compare(open_model("model.pt"))          # config inferred, seed 42, profile llmc
    print(report.render()); report.passed("close")
    compare(model, scheme="xavier-uniform")            # any reference.schemes init scheme ...
    compare(model, overrides=["wpe.std=0.01"])         # ... with --set style overrides

    graders = law_graders(model, init)                 # against the laws alone, values pushed
    graders["wte"].feed(0, chunk); graders["wte"].grade()   # chunk by chunk (gpt2-verify report)

Depends on verify.formats, verify.stats and reference; nothing there depends on it.
"""

from .compare import DEFAULT_FPR, compare
from .grade import VERDICTS
from .lawgrade import LawGrader, law_graders, model_verdict
from .report import REQUIRE_LEVELS, SCHEMA, Report

__all__ = ["compare", "Report", "VERDICTS", "REQUIRE_LEVELS", "SCHEMA", "DEFAULT_FPR", "LawGrader",
           "law_graders", "model_verdict"]
