"""The exceptions of circus-plugins.

Every error the package raises on purpose derives from :class:`CircusPluginError`, so
``except CircusPluginError`` catches all of them and nothing else.
"""


class CircusPluginError(Exception):
    """Base class of every error raised by circus-plugins."""


class CallError(CircusPluginError):
    """A command sent to circusd got no reply: timed out, or the plugin stopped first."""


class ConfigError(CircusPluginError, ValueError):
    """A plugin option, a ``--config`` string or a circus.ini section is missing or bad.

    The message names the plugin, the option and the offending value. It also derives from
    :class:`ValueError`, which is what circus 0.19's plugins raise for bad options.
    """


class PluginLoadError(CircusPluginError, ImportError):
    """A plugin name does not import, or does not name a :class:`CircusPlugin` subclass."""


class MalformedEvent(CircusPluginError, ValueError):
    """An event that cannot be read; ``str()`` says why (without the whole payload).

    Raised by :func:`circus_plugins.events.parse_event`.
    """
