"""Judge any PyTorch GPT-2 nn.Module against the float64 reference (`gpt2-verify module`)."""

from .check import DEFAULT_CONFIG, ModuleReport, check_module

__all__ = ["DEFAULT_CONFIG", "ModuleReport", "check_module"]
