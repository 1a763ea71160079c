"""Constants the tests share, computed from independent sources (never by this project).

The llm.c checksums come from llm.c's own C code: a scratch harness around llmc/rand.h and the
init loop of train_gpt2.cu `gpt_build_from_descriptor` (gcc -O3, x86-64, glibc 2.36), SHA-256
of the float32 parameter buffer, i.e. of a checkpoint's body.
"""

from __future__ import annotations

from gpt2_verify.reference.config import GPTConfig

SEED = 42  # llm.c's manual_seed(42)
FAMILY_FPR = 1e-9  # per config: all distribution checks of one model together
# small but complete: every tensor >= 16 values, V not a multiple of 128 (Vp 1024), 171k params
SMALL = GPTConfig(2, 64, 4, vocab=1000, max_seq_len=64)

LLMC_SHA256 = {
    # (L, C, NH, V, Vp, maxT, seed): sha256 of the float32 parameter buffer (checkpoint body)
    (1, 2, 1, 5, 5, 1, 42): "7e66d56065a222306c8f1b4c7008f3767ecccfeca2a17e7278f97921c43e23c7",
    (2, 4, 4, 10, 16, 3, 42): "a46eef664fb3fd5b02ef962c9d7fe92edcd4d67a45cb9cfdb730223f4e710259",
    (3, 6, 3, 97, 128, 7, 42): "ca8368c73f092f309bac7269987d9c0e7688793992dbc99daaf47e4b88778256",
    (1, 8, 2, 100, 128, 4, 42): "4a02cfbc89e4ba0a0153f78e8e242ea4c0f04f276c514dee1e174f6172e9363b",
    (2, 64, 4, 50257, 50304, 1024, 0):
        "d189d590d71f83bac26b0604cb1e9cef5ce610e52aa7ea1eeef4b81b639b793e",
    (2, 64, 4, 50257, 50304, 1024, 42):
        "b8cce6a4bd70b4389e636d185bc0e3829f9a440a831db2d90614f7039d619ade",
    (2, 64, 4, 50257, 50304, 1024, 1337):
        "75c497036657685c79c36c28917512ea74c35a1a39f1984201a0728de8558e28",
}
LLMC_DESCRIPTOR_SHA256 = {
    "d6": "f425eb65e8956db76c56478326c69d97134e09aea4cc5ffc7056cc98fc981351",
    "d12": "ed8f81a257c3797ef0ad29560f4c354dd2ec8723efc8ff56f835aa19357689a8",
    "gpt3:c768": "ac04cec302eaf8e1a8468f4d2f6e912190a40d4d5dbabcf6fa1f278f4686797d",
}
# too big to regenerate in the default run: checked here against the golden records (which
# `golden check` regenerates), and directly by the slow test below
LLMC_LARGE_SHA256 = {
    "d24": "483654212527a2250e229499d2f5a6fcba5b353e5c5f9ddfb4a3e48d38609c64",
    "d36": "28e600cabd5d1f189fb887e441065eeb1a1c2087dc86fad3dec9ae6c71776cc1",
    "d48": "f028d4674783c80fa60619598cc8abd881580b84a602ed14e3ddb6e6fcce30d1",
}

# llm.c's own uniform_ (llmc/rand.h: randfloat32(state) * (to - from) + from, in float) from
# manual_seed(seed), from = -a, to = a; a scratch harness around rand.h built with gcc 12 -O3:
# with -march=native gcc contracts the expression into one FMA (one rounding), without it two
# roundings. SHA-256 of the float32 values.
LLMC_UNIFORM_SHA256 = {
    # (seed, n, a as a float32 value): {build: sha256}
    (42, 100_003, 0.08838830143213272): {
        "fma": "d78023fb007b9a938dd7a92aa63b8577871fd0fe87ec88b01285b3547bcaf744",
        "no-fma": "b2095150ff6d81a2a6b255b743331e4e2fea10497345987ed9859688c76a9792"},
    (7, 5000, 0.03608439862728119): {
        "fma": "f31c436fb39302290375139ee5eeeb2ad904a588f12755e8c3b1386f706b7be1",
        "no-fma": "c9631157a7e86e81fa830fc544cee92ddca38b45eaba3b0d0781680daa23e837"},
}
