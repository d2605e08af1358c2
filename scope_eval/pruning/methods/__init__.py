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
import logging
import pkgutil
from importlib.metadata import entry_points

from ..registry import BROKEN_PLUGINS

ENTRY_POINT_GROUP = "scope_eval.methods"


def _import_own_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def _import_plugin_modules() -> None:
    """Import every plugin; one that fails (raises on import, registers a name twice, has no name, names a
    missing attribute) is set aside with a warning naming its package, so that commands not using it go on.
    Asking for it then fails with the same words (registry.BROKEN_PLUGINS)."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception as error:  # a broken third-party package must say which one it is
            source = entry_point.dist.name if entry_point.dist is not None else "an installed package"
            problem = (
                f"pruning method plugin '{entry_point.name}' ({entry_point.value}) from {source} failed to import: "
                f"{type(error).__name__}: {error}; fix or uninstall that package"
            )
            BROKEN_PLUGINS[entry_point.name] = problem
            # logged, not warnings.warn: lmms-eval's process ignores every warning (a dependency installs an
            # "ignore" filter for Warning), and this line must reach the user of every command
            logging.getLogger(__name__).warning("warning: %s (its methods are unavailable; the others work)", problem)


_import_own_modules()
_import_plugin_modules()
