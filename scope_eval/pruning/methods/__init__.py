"""One file per pruning method; importing this package registers every method.

Each module in this folder registers its method with ``@register`` when imported, and this package
imports all of them, so a new method is one new file here and nothing else. Methods of other packages
register the same way from their own modules, named under the entry-point group ``scope_eval.methods``
in their package metadata, e.g. in their pyproject.toml:

    [project.entry-points."scope_eval.methods"]
    keep_first = "my_package.keep_first"
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "scope_eval.methods"


def _import_own_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def _import_plugin_modules() -> None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as error:  # a broken third-party package must say which one it is
            source = entry_point.dist.name if entry_point.dist is not None else "an installed package"
            raise ImportError(
                f"pruning method plugin '{entry_point.name}' ({entry_point.value}) from {source} failed to import: "
                f"{type(error).__name__}: {error}; fix or uninstall that package"
            ) from error


_import_own_modules()
_import_plugin_modules()
