"""Settings: read once from the environment, validated, with the token's edge cases."""

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults_and_overrides():
    settings = Settings.from_environ({"LINESCORE_MAX_BATCH": "64", "LINESCORE_WORKERS": ""})
    assert settings.max_batch == 64 and settings.workers == 2  # empty means unset
    assert settings.api_token is None and settings.prometheus_multiproc_dir is None


def test_a_token_from_a_secret_file_loses_its_newline():
    settings = Settings.from_environ({"LINESCORE_API_TOKEN": "s3cret\n"})
    assert settings.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)  # never printed in logs or tracebacks


@pytest.mark.parametrize("blank", ["", " ", "\n"])
def test_a_set_but_blank_token_is_refused_not_ignored(blank):
    with pytest.raises(ValidationError, match="LINESCORE_API_TOKEN is blank"):
        Settings.from_environ({"LINESCORE_API_TOKEN": blank})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LINESCORE_WORKERS", "0"),
        ("LINESCORE_MAX_BATCH", "many"),
        ("LINESCORE_DRAIN_SECONDS", "-1"),
        ("LINESCORE_HTTP_THREADS", "0"),
        ("LINESCORE_MAX_CONNECTIONS", "1"),
        ("LINESCORE_MAX_CONNECTIONS", "2"),  # no more than the request threads: none kept alive
        ("LINESCORE_KEEPALIVE", "-5"),
    ],
)
def test_bad_values_are_refused(variable, value):
    with pytest.raises(ValidationError):
        Settings.from_environ({variable: value})


def test_an_empty_metrics_dir_is_unset_not_the_working_directory():
    assert Settings.from_environ({"PROMETHEUS_MULTIPROC_DIR": ""}).prometheus_multiproc_dir is None
