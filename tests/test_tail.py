"""The last lines of a file within a byte cap (circus_plugins.alerts._tail)."""
import re

import pytest
from hypothesis import given, settings, strategies as st

from circus_plugins.alerts import _tail
from circus_plugins.alerts._tail import tail


def write(tmp_path, data):
    path = tmp_path / 'out.log'
    path.write_bytes(data)
    return str(path)


def cleaned_lines(data):
    """The file's lines as tail() cleans them: no line ends, no control characters but tab."""
    text = data.decode('utf-8', 'replace').replace('\r\n', '\n')
    found = text.split('\n')
    if found[-1] == '':
        found.pop()
    return [re.sub(r'[\x00-\x08\x0b-\x1f\x7f]', '', line.replace('\r', '')) for line in found]


def test_the_last_lines(tmp_path):
    path = write(tmp_path, b'one\ntwo\nthree\nfour\n')
    assert tail(path, 2, 1000) == (['three', 'four'], '')


def test_fewer_lines_than_asked_are_all_returned(tmp_path):
    assert tail(write(tmp_path, b'one\ntwo\n'), 10, 1000) == (['one', 'two'], '')


def test_only_max_bytes_are_read_from_the_end_of_a_huge_file(tmp_path, monkeypatch):
    path = tmp_path / 'huge.log'
    with open(path, 'wb') as stream:
        stream.seek(100 * 2 ** 20)  # a sparse 100 MiB of NULs, then the last lines
        stream.write(b'\nnext to last\nlast\n')
    reads = []

    class Spy:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def seek(self, *args):
            return self.stream.seek(*args)

        def read(self, size=-1):
            reads.append(size)
            return self.stream.read(size)

    monkeypatch.setattr(_tail, 'open', lambda *args: Spy(open(*args)), raising=False)
    assert tail(str(path), 5, 64) == (['next to last', 'last'], '')
    assert reads == [64]


def test_the_cut_first_line_is_dropped(tmp_path):
    path = write(tmp_path, b'aaaa\nbbbb\ncccc\n')
    assert tail(path, 10, 7) == (['cccc'], '')  # read: 'b\ncccc\n'


def test_a_file_within_the_cap_keeps_its_first_line(tmp_path):
    path = write(tmp_path, b'aaaa\nbbbb\n')
    assert tail(path, 10, 10) == (['aaaa', 'bbbb'], '')


def test_a_last_line_without_a_line_end(tmp_path):
    assert tail(write(tmp_path, b'one\ntwo'), 10, 1000) == (['one', 'two'], '')


def test_crlf_line_ends(tmp_path):
    assert tail(write(tmp_path, b'one\r\ntwo\r\n'), 10, 1000) == (['one', 'two'], '')


def test_invalid_utf8_is_replaced(tmp_path):
    path = write(tmp_path, b'ok \xff\xfe end\n\xc3\xa9t\xc3\xa9\n')
    assert tail(path, 10, 1000) == (['ok \ufffd\ufffd end', '\u00e9t\u00e9'], '')


def test_control_characters_are_stripped_but_tabs_kept(tmp_path):
    path = write(tmp_path, b'\x1b[31mred\x1b[0m\tdone\x00\x07\x7f\n50%\r100%\n')
    assert tail(path, 10, 1000) == (['[31mred[0m\tdone', '50%100%'], '')


def test_a_missing_file_says_why(tmp_path):
    path = str(tmp_path / 'gone.log')
    assert tail(path, 10, 1000) == ([], 'cannot read %s: No such file or directory' % path)


def test_an_unreadable_file_says_why(tmp_path):
    lines, why = tail(str(tmp_path), 10, 1000)  # a directory
    assert lines == [] and why.startswith('cannot read %s: ' % tmp_path)


@pytest.mark.parametrize('lines, max_bytes', [(0, 1000), (-1, 1000), (10, 0), (10, -5)])
def test_no_lines_or_no_bytes_asked_reads_nothing(tmp_path, lines, max_bytes):
    assert tail(write(tmp_path, b'one\n'), lines, max_bytes) == ([], '')
    assert tail(str(tmp_path / 'gone.log'), lines, max_bytes) == ([], '')


def test_an_empty_file(tmp_path):
    assert tail(write(tmp_path, b''), 10, 1000) == ([], '')


@pytest.mark.parametrize('end', [b'\n', b'\r\n', b''])
def test_a_line_longer_than_max_bytes_keeps_its_end(tmp_path, end):
    path = write(tmp_path, b'first\n' + b'x' * 1000 + b'END' + end)
    assert tail(path, 10, 100) == (['x' * (97 - len(end)) + 'END'], '')


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.lists(
           st.sampled_from([b'a', b'bc', b'\n', b'\r', b'\r\n', b'\t', b'\x1b', b'\xc3\xa9',
                            b'\xe2\x82\xac', b'\xff']), max_size=60).map(b''.join),
       lines=st.integers(-2, 12), max_bytes=st.integers(-2, 220))
def test_any_content_gives_at_most_lines_lines_of_the_file(tmp_path_factory, data, lines,
                                                            max_bytes):
    path = write(tmp_path_factory.mktemp('tail'), data)
    got, why = tail(path, lines, max_bytes)
    assert why == '' and len(got) <= max(lines, 0)
    every = cleaned_lines(data)
    if got and got != every[-len(got):]:
        # no whole line within the cap: the end of the last one (a cut character is U+FFFD)
        assert len(got) == 1 and every[-1].endswith(got[0].lstrip('\ufffd'))
    if len(data) <= max_bytes and lines > 0:
        assert got == every[-lines:]
