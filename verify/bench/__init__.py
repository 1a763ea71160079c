"""Compute benchmark of GPT-2 at random init: forward, backward and the AdamW step of the
reference float32 model (verify.numerics.model.TorchModel), and llm.c's own train_gpt2, as
JSON records that merge across machines into one table (`gpt2-verify bench`).

    timing    what is timed: TorchModel's training steps, llm.c's train_gpt2 as a child process
    flops     FLOPs per token (ours and the common estimates), the GPU peak table, MFU
    device    the machine's facts for each row, and how memory is measured
    record    a row, the JSON record (verify.records.BenchRecord), merge and the table
"""
