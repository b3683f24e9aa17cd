"""The method names are declared once (METHOD_MODULES) and everything else agrees with them."""

import importlib
import pkgutil

import pytest

import tests.selection as suite
from bilaf.selection import METHOD_MODULES, get_method
from bilaf.selection.base import REGISTRY, register
from tests.selection.contract import SelectionContract


def contract_classes() -> dict[str, list[type]]:
    """Method name -> the SelectionContract subclasses of every tests/selection module."""
    found: dict[str, list[type]] = {}
    for info in pkgutil.iter_modules(suite.__path__):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"tests.selection.{info.name}")
            for value in vars(module).values():
                if isinstance(value, type) and issubclass(value, SelectionContract):
                    if value is not SelectionContract and value.__module__ == module.__name__:
                        found.setdefault(value.method, []).append(value)
    return found


def test_every_registered_method_has_a_contract_subclass():
    assert sorted(contract_classes()) == sorted(METHOD_MODULES)


def test_both_bilaf_modes_run_the_contract():
    modes = {cls.options.get("mode") for cls in contract_classes()["bilaf"]}
    assert modes == {"paper", "reference"}


def test_each_module_registers_the_name_the_table_gives_it():
    for name in METHOD_MODULES:
        assert get_method(name).__module__ == METHOD_MODULES[name]
        assert REGISTRY[name] is get_method(name)


def test_a_module_outside_the_table_cannot_register():
    def stray(features, budget, seed):
        return None

    stray.__module__ = "somewhere.else"
    with pytest.raises(RuntimeError, match=r"somewhere\.else is not the module of one"):
        register()(stray)
