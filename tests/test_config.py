import pytest

from sao import config


def test_defaults_serve_the_demo():
    cfg = config.Config()
    assert cfg.paths.catalog == "data/catalog.duckdb"
    assert cfg.replica.host == "127.0.0.1" and cfg.replica.max_page_size == 150
    assert len(cfg.config_hash()) == 16


def test_file_overrides_and_relative_paths(tmp_path):
    f = tmp_path / "sao.toml"
    f.write_text('[paths]\ncatalog = "db/cat.duckdb"\n[replica]\nrate_limit_per_minute = 5\n')
    cfg = config.load(f)
    assert cfg.catalog_path == tmp_path / "db" / "cat.duckdb"
    assert cfg.replica.rate_limit_per_minute == 5
    assert cfg.config_hash() != config.Config().config_hash()


@pytest.mark.parametrize("text,message", [
    ("[pathz]\n", r"unknown section \[pathz\]"),
    ("[paths]\ncatalogue = 'x'\n", r"\[paths\].catalogue: unknown key"),
    ("[replica]\nport = 'eighty'\n", r"\[replica\].port: expected int"),
    ("[replica]\nport = -1\n", r"must be >= 0"),
    ("[logging]\nlevel = 'LOUD'\n", "not DEBUG"),
    ("[paths\n", "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load(f)


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_token_from_environment_or_file_never_in_the_config_dump(tmp_path, monkeypatch):
    secret = "tok-from-file-91c"
    (tmp_path / "token.txt").write_text(secret + "\n")
    f = tmp_path / "sao.toml"
    f.write_text('[freesound]\ntoken_env = "SAO_TEST_TOKEN"\ntoken_file = "token.txt"\n')
    cfg = config.load(f)
    monkeypatch.delenv("SAO_TEST_TOKEN", raising=False)
    assert config.freesound_token(cfg) == secret
    monkeypatch.setenv("SAO_TEST_TOKEN", "from-env")
    assert config.freesound_token(cfg) == "from-env"
    assert secret not in config.to_toml(cfg) and "from-env" not in config.to_toml(cfg)
    (tmp_path / "token.txt").unlink()
    monkeypatch.delenv("SAO_TEST_TOKEN")
    with pytest.raises(config.ConfigError, match="token_file"):
        config.freesound_token(cfg)


def test_policy_can_be_narrowed_not_widened(tmp_path):
    f = tmp_path / "sao.toml"
    f.write_text('[policy]\nallowed_licenses = ["cc0-1.0"]\n')
    assert config.license_policy(config.load(f)).allowed == frozenset({"cc0-1.0"})
    f.write_text('[policy]\nallowed_licenses = ["cc0-1.0", "cc-by-nc-4.0"]\n')
    with pytest.raises(config.ConfigError, match="allowed_licenses"):
        config.load(f)
