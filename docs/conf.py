"""Sphinx configuration for the circus-plugins documentation.

Build with warnings as errors::

    .venv/bin/sphinx-build -W -b html docs docs/_build/html

Nothing here fetches anything from the network: no intersphinx.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

from circus_plugins import __version__  # noqa: E402

project = 'circus-plugins'
author = 'the circus-plugins authors'
copyright = '%s' % author
version = __version__
release = __version__

extensions = ['sphinx.ext.autodoc']

autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'

master_doc = 'index'
root_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'sphinx'

html_theme = 'alabaster'
html_title = 'circus-plugins %s' % release

man_pages = [
    ('circus-plugin', 'circus-plugin', 'run one Circus plugin against a circusd',
     [author], 1),
]
