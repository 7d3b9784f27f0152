"""Loading plugins: a dotted name such as ``myproject.plugins.Logger`` into a plugin class,
and a ``[plugin:NAME]`` section into the command line that runs it.
"""
import importlib
import shlex
import sys
from typing import Any, Mapping, Optional

from .config import encode_config
from .errors import ConfigError, PluginLoadError
from .plugin import CircusPlugin


def load_plugin_class(name: str) -> type:
    """Import and return the class that ``name`` points to.

    ``name`` is ``package.module.Class`` or ``package.module:Class``. Raises
    :class:`PluginLoadError`, naming ``name``, when it does not import or is not a
    subclass of :class:`~circus_plugins.CircusPlugin` or of circus 0.19's own base
    (see :func:`is_circus_plugin`).
    """
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


def get_plugin_cmd(config: Mapping[str, Any], endpoint: str, pubsub: str,
                   check_delay: float, ssh_server: Optional[str],
                   debug: bool = False, loglevel: Optional[str] = None,
                   logoutput: Optional[str] = None) -> str:
    """Build the shell-quoted command line that runs a plugin with ``circus-plugin``.

    ``config`` is a ``[plugin:NAME]`` section as a mapping: ``use`` names the plugin class
    and every other key is an option. Unlike circus 0.19's, every argument is quoted, so
    each value reaches the plugin intact, ``check_delay`` (seconds) is passed on, and
    ``config`` is not modified. Raises :class:`PluginLoadError` if ``use`` does not import.
    """
    if 'use' not in config:
        raise ConfigError('plugin %r: the "use" option is missing'
                          % config.get('name', '?'))
    fqn = config['use']
    load_plugin_class(fqn)
    options = {k: v for k, v in config.items() if k != 'use'}
    args = [sys.executable, '-m', 'circus_plugins', '--endpoint', endpoint,
            '--pubsub', pubsub, '--check-delay', str(float(check_delay))]
    if ssh_server is not None:
        args += ['--ssh', ssh_server]
    if options:
        args += ['--config', encode_config(options)]
    if debug:
        args += ['--log-level', 'debug']
    elif loglevel:
        args += ['--log-level', loglevel]
    if logoutput:
        args += ['--log-output', logoutput]
    args.append(fqn)
    return ' '.join(shlex.quote(str(arg)) for arg in args)
