"""Deferred imports: a module imported with some of its imports stood in for until something uses them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchchat._lazy import import_deferring

HEAVY = '''
class Big:
    def __init__(self, size):
        self.size = size

    @classmethod
    def sized(cls, size):
        return cls(size)


def other():
    return "other"
'''
USER = '''
from {heavy} import Big{extra}


def make(size) -> Big | int:
    return Big(size)
'''


@pytest.fixture
def modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    """A heavy module and a module that imports a class from it, under names unique to the test."""
    stem = "".join(c for c in request.node.name if c.isalnum())
    heavy, user = f"heavy_{stem}", f"user_{stem}"
    (tmp_path / f"{heavy}.py").write_text(HEAVY)
    extra = ", other" if "notlisted" in stem else ""
    (tmp_path / f"{user}.py").write_text(USER.format(heavy=heavy, extra=extra))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield heavy, user
    for name in (heavy, user):
        sys.modules.pop(name, None)


def test_the_deferred_module_is_imported_on_first_use(modules: tuple[str, str]) -> None:
    heavy, user = modules
    import_deferring(user, {heavy: ("Big",)})
    assert user in sys.modules and heavy not in sys.modules
    made = sys.modules[user].make(3)
    assert heavy in sys.modules and hasattr(sys.modules[heavy], "__file__")
    assert type(made) is sys.modules[heavy].Big and made.size == 3


def test_an_attribute_of_a_stand_in_is_the_real_classs(modules: tuple[str, str]) -> None:
    heavy, user = modules
    import_deferring(user, {heavy: ("Big",)})
    made = sys.modules[user].Big.sized(5)
    assert type(made) is sys.modules[heavy].Big and made.size == 5


def test_a_name_not_listed_imports_the_real_module_at_once(modules: tuple[str, str]) -> None:
    heavy, user = modules  # the user module also takes `other`, which is not listed
    import_deferring(user, {heavy: ("Big",)})
    assert heavy in sys.modules and hasattr(sys.modules[heavy], "__file__")
    assert sys.modules[user].other() == "other"


def test_a_module_already_imported_is_used_as_it_is(modules: tuple[str, str]) -> None:
    heavy, user = modules
    real = __import__(heavy)
    import_deferring(user, {heavy: ("Big",)})
    assert sys.modules[user].Big is real.Big


def test_the_stubs_are_gone_when_the_import_fails(modules: tuple[str, str]) -> None:
    heavy, _user = modules
    with pytest.raises(ModuleNotFoundError):
        import_deferring("no_such_module_anywhere", {heavy: ("Big",)})
    assert heavy not in sys.modules
