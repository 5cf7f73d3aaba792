"""cogman.contrib.django reads the COGMAN_* Django settings (cogman/contrib/django/config.py); this part
needs no Django, so it runs in the main suite. The rest of the integration is tests/django_project."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cogman import Config
from cogman.contrib.django.config import options_from_settings
from cogman.errors import ConfigError


def test_every_cogman_setting_becomes_a_config_option_and_others_are_ignored():
    settings = SimpleNamespace(
        DEBUG=True,
        CELERY_BROKER_URL="amqp://elsewhere//",
        COGMAN_BROKER_URL="amqp://guest:guest@rabbit:5672//",
        COGMAN_BACKEND_URL=("redis://r:6379/0", "mongodb://m:27017"),
        COGMAN_CONCURRENCY=4,
        COGMAN_REQUEST_TIMEOUT=2,
        COGMAN_EAGER=False,
        COGMAN_PREFETCH=None,
        COGMAN_SEND_MODE="confirmed",
    )
    options = options_from_settings(settings)
    assert options == {
        "broker_url": "amqp://guest:guest@rabbit:5672//",
        "backend_url": ["redis://r:6379/0", "mongodb://m:27017"],
        "concurrency": 4,
        "request_timeout": 2,
        "eager": False,
        "prefetch": None,
        "send_mode": "confirmed",
    }
    assert Config(**options).backend_urls == ["redis://r:6379/0", "mongodb://m:27017"]


def test_strings_are_parsed_as_the_environment_variables_are():
    settings = SimpleNamespace(COGMAN_CONCURRENCY="16", COGMAN_EAGER="yes", COGMAN_PREFETCH="none")
    assert options_from_settings(settings) == {"concurrency": 16, "eager": True, "prefetch": None}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"COGMAN_BROKER": "amqp://x//"}, "COGMAN_BROKER is not a cogman setting; did you mean COGMAN_BROKER_URL?"),
        ({"COGMAN_NOTHING_LIKE_IT": 1}, "COGMAN_NOTHING_LIKE_IT is not a cogman setting; known: COGMAN_API_CORS"),
        ({"COGMAN_CONCURRENCY": 2.5}, "COGMAN_CONCURRENCY = 2.5 is not an integer"),
        ({"COGMAN_CONCURRENCY": True}, "COGMAN_CONCURRENCY = True is not an integer"),
        ({"COGMAN_CONCURRENCY": "many"}, "COGMAN_CONCURRENCY='many' is not an integer"),
        ({"COGMAN_SEND_MODE": "eventually"}, "COGMAN_SEND_MODE='eventually' is not one of 'recorded', 'confirmed'"),
        ({"COGMAN_BACKEND_URL": ["redis://r", 5]}, "COGMAN_BACKEND_URL = ['redis://r', 5] is not a string or a list"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(settings: dict[str, object], message: str):
    with pytest.raises(ConfigError) as raised:
        options_from_settings(SimpleNamespace(**settings))
    assert message in str(raised.value)


def test_importing_the_package_reads_no_setting_and_needs_no_django():
    import cogman.contrib.django as contrib

    assert "app" in contrib.__all__
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = contrib.nothing
