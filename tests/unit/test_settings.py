"""Settings come from the function's environment, with the names the template gives them."""

import pytest
from mailqueue.settings import Settings


def test_settings_read_the_template_variables():
    settings = Settings.from_env(
        {
            "TABLE_NAME": "emails",
            "SENDING_IDENTITIES": "Example.com, app@other.example ,",
            "SES_CONFIGURATION_SET": "mailqueue-events",
            "MAX_ATTEMPTS": "7",
            "SEND_RATE": "50",
        }
    )

    assert settings.table_name == "emails"
    assert settings.sending_identities == ("example.com", "app@other.example")
    assert settings.configuration_set == "mailqueue-events"
    assert settings.max_attempts == 7
    assert settings.send_rate == 50.0


def test_an_empty_configuration_set_means_none():
    assert Settings.from_env({"SES_CONFIGURATION_SET": ""}).configuration_set is None


def test_values_from_the_environment_become_their_types():
    settings = Settings.from_env({"SEND_RATE": "2.5", "DEADLINE_SHARDS": "8", "SENDING_IDENTITIES": "a.example"})

    assert settings.send_rate == 2.5
    assert settings.deadline_shards == 8
    assert settings.sending_identities == ("a.example",)


@pytest.mark.parametrize(
    "env",
    [
        {"MAX_ATTEMPTS": "0"},
        {"MAX_ATTEMPTS": "21"},
        {"SEND_RATE": "0"},
        {"STATUS_SHARDS": "x"},
        {"RETENTION_DAYS": "1.5"},
    ],
)
def test_a_value_out_of_bounds_or_of_the_wrong_type_is_refused(env):
    with pytest.raises(ValueError, match=next(iter(env)).lower()):
        Settings.from_env(env)


def test_a_copy_with_changes_is_checked_too():
    assert Settings().model_copy(update={"max_attempts": 2}).max_attempts == 2
    with pytest.raises(ValueError, match="max_attempts"):
        Settings().model_copy(update={"max_attempts": 0})


@pytest.mark.parametrize(("raw", "value"), [("0", False), ("false", False), ("1", True), ("TRUE", True)])
def test_high_priority_first_is_a_flag(raw, value):
    assert Settings.from_env({"HIGH_PRIORITY_FIRST": raw}).high_priority_first is value
    assert Settings.from_env({}).high_priority_first is True


def test_a_flag_that_says_neither_is_refused():
    with pytest.raises(ValueError, match="high_priority_first must be bool"):
        Settings.from_env({"HIGH_PRIORITY_FIRST": "sometimes"})
