"""Settings come from the function's environment, with the names the template gives them."""

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
