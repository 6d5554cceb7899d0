import pytest

from dynod.errors import UserError
from dynod.settings import load_settings


def test_acm_defaults_are_lets_encrypt_and_heroku_like(tmp_path):
    path = tmp_path / "dynod.toml"
    path.write_text("")
    acm = load_settings(path).acm
    assert acm.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert acm.renew_before_days == 30 and acm.ca_file is None and acm.email is None


@pytest.mark.parametrize(("body", "words"), [
    ("retry_base = 0", "retry_base must be more than 0"),
    ("retry_base = 'soon'", "retry_base must be a number"),
    ("request_timeout = true", "request_timeout must be a number"),
    ("retry_max = 1.0", "retry_max must be at least retry_base"),
    ("renew_before_days = -1", "renew_before_days"),
    ("directory = 'x'", "unknown setting 'directory'"),
])
def test_bad_acm_settings_are_one_line(tmp_path, body, words):
    path = tmp_path / "dynod.toml"
    path.write_text(f"[acm]\n{body}\n")
    with pytest.raises(UserError) as refused:
        load_settings(path)
    assert words in str(refused.value) and "\n" not in str(refused.value)
