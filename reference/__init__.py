"""gpt2-verify reference model: llm.c-exact GPT-2 init (numpy only). Never imports verify."""
