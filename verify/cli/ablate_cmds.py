"""placeholder: `gpt2-verify ablate` (being written)."""


def register(sub) -> None:
    pass
