"""placeholder: `gpt2-verify report` (being written)."""


def register(sub) -> None:
    pass
