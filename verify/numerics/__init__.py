"""Reference GPT-2 numerics: forward/backward, AdamW (model), gradient-flow checks (gradflow)."""
