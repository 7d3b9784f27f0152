"""The last lines of a file, read from its end, never more than a given number of bytes.

Alerts show what a process printed before it died, from the file circusd writes its
stdout or stderr to. Such a file may be huge, still growing, rotated away, unreadable or
not text: :func:`tail` reads at most ``max_bytes`` from its end, decodes as UTF-8 with
replacement, and says what went wrong instead of raising.
"""
import os
import re
from typing import List, Tuple

__all__ = ['tail']

# Control characters other than tab: a process's output may hold terminal escapes.
_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')


def tail(path: str, lines: int, max_bytes: int) -> Tuple[List[str], str]:
    """The last ``lines`` lines of the file at ``path``, within its last ``max_bytes``
    bytes, and ``''``; or ``[]`` and why they could not be read (one line, for a
    message). Lines lose their line ends and control characters; the first line is
    dropped when the bytes read begin in its middle, unless it is the only one (a line
    longer than ``max_bytes``: its end is kept). Reading takes one ``seek`` and one
    ``read`` of at most ``max_bytes``: quick on a local file."""
    if lines <= 0 or max_bytes <= 0:
        return [], ''
    try:
        with open(path, 'rb') as stream:
            size = stream.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            stream.seek(start)
            data = stream.read(max_bytes)
    except OSError as exc:
        return [], 'cannot read %s: %s' % (path, exc.strerror or exc)
    if start and b'\n' in data[:-1]:  # a cut line and more: keep whole ones only
        data = data[data.index(b'\n') + 1:]
    text = data.decode('utf-8', 'replace').replace('\r\n', '\n')
    found = text.split('\n')
    if found and found[-1] == '':
        found.pop()
    return [_CONTROL.sub('', line.replace('\r', '')) for line in found[-lines:]], ''
