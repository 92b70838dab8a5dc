"""Every `sao` sub-command, at every depth, answers --help; every leaf has a help string and a command."""
import argparse
import subprocess
import sys

import pytest

from sao import cli

from .conftest import REPO


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help_text: str | None = None):
    """(path, parser, its help string in the parent's listing, is a leaf) for the parser and all below it."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, parser, help_text, not subs
    for action in subs:
        helps = {c.dest: c.help for c in action._choices_actions}
        for name, child in action.choices.items():
            yield from _walk(child, (*path, name), helps.get(name))


COMMANDS = list(_walk(cli.build_parser()))


def test_the_walk_reaches_every_depth():
    paths = {p for p, *_ in COMMANDS}
    assert {("review", "run"), ("review", "approve"), ("train", "dit"), ("train", "encode-latents"),
            ("eval", "generate"), ("keys", "generate"), ("demo",)} <= paths
    assert len([1 for *_, leaf in COMMANDS if leaf]) > 40


@pytest.mark.parametrize("path", [p for p, *_ in COMMANDS], ids=[" ".join(p) or "sao" for p, *_ in COMMANDS])
def test_help(path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.strip() and f"usage: {' '.join(('sao', *path))}" in out


LEAVES = [(p, sp, h) for p, sp, h, leaf in COMMANDS if leaf]


@pytest.mark.parametrize("path,parser,help_text", LEAVES, ids=[" ".join(p) for p, *_ in LEAVES])
def test_every_leaf_has_help_and_a_command(path, parser, help_text):
    assert help_text and help_text.strip(), path
    func = parser.get_default("func")
    assert callable(func), path
    assert func.__module__.startswith("sao.cli."), path


def test_python_dash_m_sao_help():
    r = subprocess.run([sys.executable, "-m", "sao", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: sao") and "demo" in r.stdout


def test_the_config_is_loaded_once(tmp_path, monkeypatch, capsys):
    from sao import config as config_mod
    f = tmp_path / "sao.toml"
    f.write_text('[paths]\ndata_dir = "data"\ncatalog = "data/catalog.duckdb"\n')
    calls = []
    real = config_mod.load
    monkeypatch.setattr(config_mod, "load", lambda path=None: calls.append(path) or real(path))
    assert cli.main(["--config", str(f), "catalog", "init"]) == 0
    assert calls == [str(f)]
    assert (tmp_path / "data" / "catalog.duckdb").exists()


def test_commands_that_need_no_config_run_with_a_broken_one_given_a_log_level(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[replica]\nport = 'x'\n")
    good = tmp_path / "good.toml"
    good.write_text("")
    assert cli.main(["--config", str(bad), "config", "validate", str(good)]) == 2      # as before: logging needs it
    assert cli.main(["--config", str(bad), "--log-level", "INFO", "config", "validate", str(good)]) == 0
    assert f"{good}: ok" in capsys.readouterr().out
    keys = tmp_path / "k"
    assert cli.main(["--config", str(bad), "--log-level", "INFO", "keys", "generate", "--out", str(keys)]) == 0
    assert (keys / "signing.pub").is_file()
    assert cli.main(["--config", str(bad), "--log-level", "INFO", "config", "show"]) == 2
    assert "[replica].port" in capsys.readouterr().err
