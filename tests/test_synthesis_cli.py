"""CLI user errors of bench/export: one line on stderr, exit code 2, nothing built or written."""

from __future__ import annotations

import pytest

from histoaug.cli.main import main as cli_main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--batch", "0"], "--batch values must be positive"),
        (["bench", "--batch", "x"], "comma-separated integers"),
        (["bench", "--steps", "0"], "steps must be"),
        (["bench", "--guidance", "0.5"], "guidance must be"),
        (["bench", "--scheduler", "pndm"], "unknown scheduler"),
        (["bench", "--repeats", "0"], "--repeats must be positive"),
        (["export", "src", "out", "--format", "tflite"], "invalid choice"),
        (["export", "src", "out", "--batch", "0"], "--batch must be positive"),
    ],
)
def test_user_errors(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse usage errors exit from the parser
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
