"""User-facing errors: one home, the old import paths still give the same classes, the CLI catches them."""

from __future__ import annotations

import importlib

import pytest

from densessl import cli, errors

#: where each error lived before densessl.errors; callers still import it from there
OLD_HOMES = {
    "ConfigError": "densessl.config",
    "DataError": "densessl.data.base",
    "CorruptImageError": "densessl.data.base",
    "CheckpointError": "densessl.training.checkpoint",
    "TrainingError": "densessl.training.trainer",
}


@pytest.mark.parametrize(("name", "module"), sorted(OLD_HOMES.items()))
def test_old_import_path_gives_the_same_class(name: str, module: str) -> None:
    # the same object, not a look-alike: an `except` on either name must catch the other's raise
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)
    assert getattr(errors, name).__module__ == "densessl.errors"


def test_every_error_class_of_the_package_lives_in_errors() -> None:
    import pkgutil

    import densessl

    # a new user-facing error defined anywhere else would be caught by no `except DensesslError`
    strays = []
    for info in pkgutil.walk_packages(densessl.__path__, "densessl."):
        if info.name in ("densessl.__main__", "densessl.errors"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == info.name:
                strays.append(f"{info.name}.{value.__name__}")
    assert strays == []


def test_errors_keep_their_builtin_bases() -> None:
    # code written before the move catches ValueError / RuntimeError
    assert issubclass(errors.ConfigError, ValueError)
    for cls in (errors.DataError, errors.CheckpointError, errors.TrainingError):
        assert issubclass(cls, RuntimeError)
    assert issubclass(errors.CorruptImageError, errors.DataError)
    exc = errors.CorruptImageError("a.jpg", "truncated")
    assert (exc.path, exc.reason, str(exc)) == ("a.jpg", "truncated", "cannot read image a.jpg: truncated")


@pytest.mark.parametrize("name", sorted(OLD_HOMES))
def test_cli_prints_each_error_as_one_line(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cls = getattr(errors, name)
    exc = cls("x.jpg", "bad header") if cls is errors.CorruptImageError else cls("something is wrong")

    def fail(args: object) -> int:
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "recipes", fail)
    assert cli.main(["recipes"]) == 2
    err = capsys.readouterr().err
    assert err == f"densessl: error: {exc}\n"


def test_cli_lets_programming_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(args: object) -> int:
        raise KeyError("a bug, not a user error")

    monkeypatch.setitem(cli.COMMANDS, "recipes", fail)
    with pytest.raises(KeyError):
        cli.main(["recipes"])
