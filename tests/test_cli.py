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
