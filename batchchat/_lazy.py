"""Deferred imports: lazy re-exports for package `__init__`s, so that importing a package does not import its
heavy modules, and stand-ins for what a third-party module imports but seldom uses."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from types import ModuleType
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `names[attr]` (a module path) on first use and keeps the value."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def import_deferring(module: str, deferred: dict[str, tuple[str, ...]]) -> None:
    """Import `module` with the modules named in `deferred` left unimported until something uses them.

    While `module` is imported, each deferred module is a stub: the names listed for it are stand-in classes
    that import the real module when called or when an attribute is read, and any other name imports the
    real module at once. The stubs are gone afterwards, so a later import gets the real module. Nothing is
    done when `module` is already imported.
    """
    if module in sys.modules:
        return
    stubs = {name: _stub(name, names) for name, names in deferred.items() if name not in sys.modules}
    sys.modules.update(stubs)
    try:
        import_module(module)
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]


class _StandIn(type):
    """The type of stand-in classes: an attribute they do not have is read from the real class."""

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):  # introspection (typing probing `__parameters__`, say) is not a use
            raise AttributeError(attr)
        return getattr(cls._real(), attr)


def _stub(name: str, names: tuple[str, ...]) -> ModuleType:
    stub = ModuleType(name)

    def real_module() -> ModuleType:
        if sys.modules.get(name) is stub:
            del sys.modules[name]
        return import_module(name)

    def missing(attr: str) -> Any:  # a name not listed: the real module now
        if attr.startswith("__"):  # the import system asking about the module itself (`__path__`)
            raise AttributeError(attr)
        return getattr(real_module(), attr)

    for attr in names:
        setattr(stub, attr, _stand_in(real_module, attr))
    stub.__getattr__ = missing  # type: ignore[method-assign]
    return stub


def _stand_in(real_module: Callable[[], ModuleType], attr: str) -> type:
    def real() -> Any:
        return getattr(real_module(), attr)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return real()(*args, **kwargs)

    return _StandIn(attr, (), {"__new__": __new__, "_real": staticmethod(real), "__doc__": f"Stands for {attr}."})
