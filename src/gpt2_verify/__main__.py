"""`python -m gpt2_verify`: the same as the `gpt2-verify` console script."""

import sys

from gpt2_verify.verify.cli import main

sys.exit(main())
