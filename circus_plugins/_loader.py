"""Turning a dotted name such as ``myproject.plugins.Logger`` into a plugin class."""
import importlib

from .errors import PluginLoadError


def load_plugin_class(name: str) -> type:
    """Import and return the class that ``name`` points to.

    ``name`` is ``package.module.Class`` or ``package.module:Class``. Raises
    :class:`PluginLoadError`, naming ``name``, when it does not import or is not a
    subclass of :class:`~circus_plugins.CircusPlugin` or of circus 0.19's own base
    (see :func:`is_circus_plugin`).
    """
    from .plugin import CircusPlugin

    if ':' in name:
        module_name, _, attr_path = name.partition(':')
    else:
        module_name, _, attr_path = name.rpartition('.')
    if not module_name or not attr_path:
        raise PluginLoadError('plugin %r: expected package.module.Class or '
                              'package.module:Class' % name)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginLoadError('plugin %r: cannot import %r: %s'
                              % (name, module_name, exc)) from exc
    for attr in attr_path.split('.'):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginLoadError('plugin %r: module %r has no attribute %r'
                                  % (name, module_name, attr_path)) from None
    if not (isinstance(obj, type) and (issubclass(obj, CircusPlugin)
                                       or is_circus_plugin(obj))):
        raise PluginLoadError('plugin %r: %r is not a subclass of '
                              'circus_plugins.CircusPlugin' % (name, obj))
    return obj


def is_circus_plugin(cls: type) -> bool:
    """Whether ``cls`` derives from circus 0.19's ``circus.plugins.CircusPlugin``.

    Told by name, so that asking never imports circus.
    """
    return any(base.__name__ == 'CircusPlugin' and base.__module__ == 'circus.plugins'
               for base in getattr(cls, '__mro__', ()))
