import pytest

from cifar10_classifier.cli import main


def test_help_lists_every_job(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for job in ("data", "train", "evaluate", "export", "predict", "serve"):
        assert job in out


def test_missing_source_is_one_line_error(tmp_path, capsys):
    code = main(["data", "info", str(tmp_path / "nope.tar.gz")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no such file" in err and len(err.splitlines()) == 1


def test_a_recipe_typo_fails_at_once_naming_the_allowed_values(tmp_path, capsys):
    code = main(["train", "--set", "flip=alternate", "--out", str(tmp_path / "run")])
    assert code == 2 and not (tmp_path / "run").exists()
    err = capsys.readouterr().err.strip()
    assert err == "error: recipe field flip must be one of none, random, alternating, not 'alternate'"


def test_every_subcommand_follows_one_pattern():
    from cifar10_classifier import cli

    for module in cli.SUBCOMMANDS:
        assert callable(module.register) and callable(module.run), module.__name__
