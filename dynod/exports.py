"""A package's public surface, each name imported from its module on first use.

A package ``__init__`` that imported its modules eagerly would make every importer pay for all
of them: ``dynoctl`` imports the slug file format from dynod.builds and must not import the
builder, trio or the daemon with it. So an ``__init__`` declares which module each public name
lives in, and the name is imported the first time it is read (PEP 562's module ``__getattr__``).
Importing the package itself stays free, and ``from dynod.builds import SlugStore`` still works.
"""

from __future__ import annotations

import importlib

# typing costs dynoctl ~5 ms of start-up, and every package __init__ imports this module: the
# annotations below are only strings (PEP 563), so typing is for type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_exports(package: str, where: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """(``__all__``, ``__getattr__``, ``__dir__``) for ``package``, whose public name N lives in
    its module ``where[N]`` (a name relative to the package, such as "store")."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's own name
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # the next read is a plain global
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace, *where})

    return sorted(where), __getattr__, __dir__
