"""placeholder: `gpt2-verify bench` (being written)."""


def register(sub) -> None:
    pass
