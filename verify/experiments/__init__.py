"""Training experiments on the reference model: token sources with known statistics
(`sources`: a Markov chain with a computed entropy rate, llm.c token shards, bytes of a file, the
fixed batch order) and init ablations with confidence intervals over seeds (`study`, the
`gpt2-verify ablate` command). Figures for them live in verify.report.figures."""
