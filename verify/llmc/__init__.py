"""Drive a user's llm.c binaries against the reference (see harness.py)."""
