"""Silence the dependency warnings every command would print, and only those.

mmengine's ``is_installed`` (run by ``Config.fromfile`` for ``mmpretrain::``
and ``mmseg::`` base configs) imports ``pkg_resources`` and then reloads it;
setuptools >= 80 warns "pkg_resources is deprecated as an API" at the import
and at each reload. The warning is attributed to the importing module:
``mmengine.utils.package_utils`` for the import, ``importlib`` for the
reloads. Nothing the user can act on, so these two sources are muted by
message and module; every other warning stays visible.

Imported first by the package ``__init__``, which every tool imports before
it loads a config.
"""
import warnings

#: (message regex, module regex) of each muted warning.
MUTED = (
    (r'pkg_resources is deprecated as an API', r'(mmengine\.utils\.package_utils|importlib)\Z'),
)


def mute_dependency_warnings() -> None:
    """Install the :data:`MUTED` filters (idempotent: ``filterwarnings`` dedupes)."""
    for message, module in MUTED:
        warnings.filterwarnings('ignore', message=message, category=UserWarning, module=module)


mute_dependency_warnings()
