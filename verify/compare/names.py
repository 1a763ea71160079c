"""Tensor names in the file's own terms: a state dict's keys (transformer.h.2.attn.c_proj.weight)
with llm.c's name beside, an llm.c checkpoint's names as they are.

Reasons, tables and JSON of a comparison name what the user's file calls a tensor; llm.c's name
(verify.formats.layouts) is kept beside it so both vocabularies read the same report.
"""

from __future__ import annotations

import numpy as np

from ..formats.layouts import LM_HEAD_KEY, STATE_DICT_KEYS, state_dict_key, transposed_in
from .regions import layer_ranges


class Names:
    """How one file names llm.c's tensors: layout "llmc" (llm.c's names) or a state-dict layout."""

    def __init__(self, layout: str = "llmc"):
        self.layout = layout

    @property
    def llmc(self) -> bool:
        return self.layout == "llmc"

    def key(self, name: str, layer: int | None = None) -> str:
        """The file's key of one tensor (one layer's slice); per-layer with layer None: the key
        pattern with {i}."""
        if self.llmc:
            return name
        if name == "lm_head":
            return LM_HEAD_KEY
        template = STATE_DICT_KEYS[name][0]
        return template if layer is None or "{i}" not in template else state_dict_key(name, layer)

    def label(self, name: str, layers: list[int] | None = None, *, all_layers: bool = False) -> str:
        """'attprojw layer 2' / 'transformer.h.2.attn.c_proj.weight (attprojw)'; several layers:
        'transformer.h.{1-2}.attn.c_proj.weight (attprojw layers 1-2)'; every layer (all_layers
        or layers None): 'transformer.h.{i}.attn.c_proj.weight (attprojw)'."""
        layers = [x for x in (layers or []) if x is not None]
        which = "" if all_layers or not layers else (
            f" layer {layers[0]}" if len(layers) == 1 else f" layers {layer_ranges(layers)}")
        if self.llmc:
            return name + which
        if name == "lm_head":
            return f"{LM_HEAD_KEY} (lm_head)"
        template = STATE_DICT_KEYS[name][0]
        if "{i}" not in template:
            return f"{template} ({name})"
        if all_layers or not layers:
            return f"{template} ({name})"
        if len(layers) == 1:
            return f"{state_dict_key(name, layers[0])} ({name})"
        return f"{template.replace('{i}', '{' + layer_ranges(layers) + '}')} ({name}{which})"

    def slice(self, name: str, layer: int | None) -> str:
        """One normal_ call's slice: 'fcw of layer 1' / 'transformer.h.1.mlp.c_fc.weight (fcw)'."""
        if self.llmc:
            return name if layer is None else f"{name} of layer {layer}"
        return self.label(name, [layer] if layer is not None else None)

    def at(self, name: str, shape, flat: int) -> str:
        """Where a flat index of llm.c's (stacked) tensor lies, as the file indexes it:
        'fcb[1, 7]' / 'transformer.h.1.mlp.c_fc.bias[7]' (a Conv1D weight's index reversed)."""
        idx = [int(i) for i in np.unravel_index(flat, shape)]
        if self.llmc or name == "lm_head":
            return f"{self.key(name)}[{', '.join(map(str, idx))}]"
        per_layer = "{i}" in STATE_DICT_KEYS[name][0]
        layer, rest = (idx[0], idx[1:]) if per_layer else (None, idx)
        if transposed_in(name, self.layout):
            rest = rest[::-1]
        return f"{self.key(name, layer)}[{', '.join(map(str, rest))}]"
