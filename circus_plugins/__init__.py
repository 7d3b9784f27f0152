"""circus-plugins: dependable, fast plugins for the Circus process manager.

A plugin subscribes to circusd's events and sends it commands; see :class:`CircusPlugin`.
"""
from ._loader import get_plugin_cmd
from ._version import __version__
from .config import decode_config, encode_config
from .errors import CallError, CircusPluginError, ConfigError, MalformedEvent, PluginLoadError
from .periodic import PeriodicPlugin
from .plugin import CircusPlugin

__all__ = ['CircusPlugin', 'PeriodicPlugin', 'CallError', 'CircusPluginError', 'ConfigError',
           'MalformedEvent', 'PluginLoadError', 'get_plugin_cmd', 'encode_config',
           'decode_config', '__version__']
