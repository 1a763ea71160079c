"""Hypothesis settings profiles for the suite.

    pytest                                   # profile "ci" (the default here)
    pytest --hypothesis-profile=dev          # random examples, example database on
    pytest --hypothesis-profile=thorough     # 300 examples, larger generated models

`ci`: derandomized (the same examples on every run and in every xdist worker), no deadline,
no example database, 25 examples, too_slow suppressed. `thorough` also switches the property
tests to larger configs (see THOROUGH_CONFIG); GPT2_VERIFY_THOROUGH=1 does the same under any
profile. Hypothesis' own pytest plugin provides --hypothesis-profile; when it is not given we
load `ci` (or $GPT2_VERIFY_HYPOTHESIS_PROFILE) before that plugin configures itself.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

DEFAULT_PROFILE = "ci"

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=50,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# gpt2_configs() keyword arguments per mode (verify.strategies.gpt2_configs).
FAST_CONFIG: dict = {}
THOROUGH_CONFIG: dict = {"max_layers": 8, "max_channels": 128, "max_seq_len": 256,
                         "max_params": 2_000_000}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # tryfirst: before Hypothesis' plugin, which loads --hypothesis-profile (if given) and
    # then derives its verbosity/explain variants from whatever profile is current.
    if not config.getoption("--hypothesis-profile", default=None):
        settings.load_profile(os.environ.get("GPT2_VERIFY_HYPOTHESIS_PROFILE", DEFAULT_PROFILE))


def thorough_active() -> bool:
    """True under the `thorough` profile (or a variant the plugin derives from it, such as
    thorough-with-verbose-verbosity) or with GPT2_VERIFY_THOROUGH=1 in the environment.

    Meaningful once pytest is configured, i.e. in test modules (collected after
    pytest_configure) and in tests."""
    if os.environ.get("GPT2_VERIFY_THOROUGH", "").lower() in ("1", "true", "yes", "on"):
        return True
    return settings.get_current_profile_name().startswith("thorough")


def config_kwargs() -> dict:
    """gpt2_configs() keyword arguments for the active mode."""
    return dict(THOROUGH_CONFIG if thorough_active() else FAST_CONFIG)


@pytest.fixture(scope="session")
def thorough() -> bool:
    return thorough_active()
