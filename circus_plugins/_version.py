"""The version of circus-plugins: the one place the code, the docs and the packaging read it."""
__version__ = '0.1.0'
