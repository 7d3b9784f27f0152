"""A plugin that writes what its process has loaded, in a module of its own: the sample
plugins import circus 0.19 (and psutil with it)."""
import sys

from circus_plugins import CircusPlugin


class ModulesDump(CircusPlugin):
    """Writes the names in ``sys.modules``, one a line, to the file named by ``dump`` in
    its handle_init: last in a host, it sees what the plugins started before it
    loaded."""

    name = 'modules_dump'

    def handle_init(self):
        with open(self.config['dump'], 'w', encoding='utf-8') as out:
            out.write('\n'.join(sorted(sys.modules)) + '\n')

    def handle_recv(self, data):
        pass
