"""The plugin manager: built-ins plus `helios` entry points, loaded once; lookup by name with clear errors.

Each hook implementation is called with its own `register` callback, so every registration knows which
plugin made it (`helios plugins` shows that). A registered thing may be the object itself or a lazy
`"module:attribute"` reference, imported on first lookup, which keeps `helios --help` fast.

`HELIOS_PLUGINS` limits which entry-point plugins load: unset loads all, an empty value loads none,
`a,b` loads only those names. Built-ins always load. A plugin that fails to import or to register is
skipped with a warning and listed with its error; it never breaks unrelated commands.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Literal

import pluggy
from pydantic import BaseModel, ConfigDict, Field

from helios_kit import hookspecs
from helios_kit.errors import SpecError, UnknownNameError

if TYPE_CHECKING:
    from helios_kit.backends.base import Backend

ENTRY_POINT_GROUP = "helios"
PLUGINS_ENV_VAR = "HELIOS_PLUGINS"
BUILTIN_PLUGIN = "helios_kit.builtin_plugins"

log = logging.getLogger("helios.plugins")

Kind = Literal["backend", "spec loader", "repository"]
_HOOKS: dict[Kind, str] = {
    "backend": "register_backends",
    "spec loader": "register_spec_loaders",
    "repository": "register_repositories",
}


class Registration(BaseModel):
    """One named thing a plugin registered."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: str
    name: str
    target: Any = Field(repr=False)
    plugin: str


class PluginInfo(BaseModel):
    """A plugin as `helios plugins` shows it: where it comes from and what it registers."""

    name: str
    origin: str
    backends: list[str] = []
    spec_loaders: list[str] = []
    repositories: list[str] = []
    error: str | None = None


def _describe_target(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "?")
    return f"{module}:{getattr(target, '__qualname__', type(target).__name__)}"


def resolve_reference(reference: str) -> Any:
    """Import `"package.module:attribute"`."""
    module_name, _, attribute = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attribute.split(".")):
        obj = getattr(obj, part)
    return obj


class HeliosPlugins:
    """The loaded plugins and everything they registered."""

    def __init__(self, *, load_entry_points: bool = True, allowed: set[str] | None = None) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.registry: dict[Kind, dict[str, Registration]] = {kind: {} for kind in _HOOKS}
        self._resolved: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        builtin = importlib.import_module(BUILTIN_PLUGIN)
        self.manager.register(builtin, name="builtin")
        self.infos["builtin"] = PluginInfo(name="builtin", origin=f"built-in ({BUILTIN_PLUGIN})")
        if load_entry_points:
            self._load_entry_points(allowed if allowed is not None else _allowed_from_env())
        self._collect()

    # -- loading -------------------------------------------------------------------------------------
    def _load_entry_points(self, allowed: set[str] | None) -> None:
        seen: set[str] = set()
        for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            if entry_point.name in seen or (allowed is not None and entry_point.name not in allowed):
                continue
            seen.add(entry_point.name)
            origin = _entry_point_origin(entry_point)
            try:
                plugin = entry_point.load()
                self.manager.register(plugin, name=entry_point.name)
            except Exception as error:  # a broken third party never breaks helios
                message = f"{type(error).__name__}: {error}"
                log.warning("warning: helios plugin %r skipped: %s", entry_point.name, message)
                self.infos[entry_point.name] = PluginInfo(name=entry_point.name, origin=origin, error=message)
                continue
            self.infos[entry_point.name] = PluginInfo(name=entry_point.name, origin=origin)

    def register_plugin(self, plugin: object, name: str, origin: str = "registered in code") -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        self.manager.register(plugin, name=name)
        self.infos[name] = PluginInfo(name=name, origin=origin)
        self._collect()

    def _collect(self) -> None:
        for kind, hook_name in _HOOKS.items():
            self.registry[kind].clear()
            hook = getattr(self.manager.hook, hook_name)
            # Registration order (built-ins first), so a later plugin can override a built-in name.
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name
                info = self.infos.setdefault(plugin_name, PluginInfo(name=plugin_name, origin="unknown"))
                collected: list[Registration] = []

                def register(
                    name: str, target: Any, _into: list[Registration] = collected, _p: str = plugin_name, _k: str = kind
                ) -> None:
                    if not isinstance(name, str) or not name:
                        raise ValueError(f"registered name must be a non-empty string, got {name!r}")
                    _into.append(Registration(kind=_k, name=name, target=target, plugin=_p))

                try:
                    impl.function(register=register)
                except Exception as error:
                    message = f"{hook_name} failed: {type(error).__name__}: {error}"
                    log.warning("warning: helios plugin %r: %s", plugin_name, message)
                    info.error = message
                    continue
                for registration in collected:
                    self.registry[kind][registration.name] = registration
        for info in self.infos.values():
            info.backends = sorted(r.name for r in self.registry["backend"].values() if r.plugin == info.name)
            info.spec_loaders = sorted(r.name for r in self.registry["spec loader"].values() if r.plugin == info.name)
            info.repositories = sorted(r.name for r in self.registry["repository"].values() if r.plugin == info.name)

    # -- lookup ----------------------------------------------------------------------------------------
    def names(self, kind: Kind) -> list[str]:
        return sorted(self.registry[kind])

    def get(self, kind: Kind, name: str) -> Any:
        """The thing registered under `name`, imported if lazy; UnknownNameError lists the known names."""
        registration = self.registry[kind].get(name)
        if registration is None:
            known = ", ".join(self.names(kind)) or "none"
            raise UnknownNameError(f"unknown {kind} {name!r}; known: {known}")
        key = (kind, name)
        with self._lock:
            if key not in self._resolved:
                target = registration.target
                if isinstance(target, str):
                    try:
                        target = resolve_reference(target)
                    except Exception as error:
                        raise UnknownNameError(
                            f"{kind} {name!r} (plugin {registration.plugin}) failed to import {target}: {error}"
                        ) from None
                self._resolved[key] = target
            return self._resolved[key]

    def backend(self, name: str) -> Any:
        return self.get("backend", name)

    def spec_loader(self, scheme: str) -> Any:
        return self.get("spec loader", scheme)

    def repository(self, name: str) -> Any:
        return self.get("repository", name)

    def describe(self, kind: Kind, name: str) -> str:
        return _describe_target(self.registry[kind][name].target)

    def plugin_infos(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda info: (info.name != "builtin", info.name))


def _allowed_from_env() -> set[str] | None:
    value = os.environ.get(PLUGINS_ENV_VAR)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _entry_point_origin(entry_point: EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    where = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"entry point {entry_point.value} ({where})"


_plugins: HeliosPlugins | None = None
_plugins_lock = threading.Lock()


def get_plugins() -> HeliosPlugins:
    """The process-wide plugins, loaded once on first use."""
    global _plugins
    with _plugins_lock:
        if _plugins is None:
            _plugins = HeliosPlugins()
        return _plugins


def make_backend(name: str, options: dict[str, Any] | None = None) -> Backend:
    """The backend registered under `name`, built from its Options: the one place that builds backends
    (`helios job run`, the JobManager, a project's dodo.py). UnknownNameError lists the known names; bad
    options are a SpecError naming the field."""
    from pydantic import ValidationError

    from helios_kit.spec import format_validation_error

    backend_cls = get_plugins().backend(name)
    try:
        backend_options = backend_cls.Options(**(options or {}))
    except ValidationError as error:
        raise SpecError(f"backend {name}: {format_validation_error(error)}") from None
    return backend_cls(backend_options)


def reset_plugins() -> None:
    """Forget the loaded plugins (tests; after installing a distribution at run time)."""
    global _plugins
    with _plugins_lock:
        _plugins = None
    importlib.invalidate_caches()
    sys.modules.pop("helios_kit.builtin_plugins", None)
