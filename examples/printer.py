"""A plugin that prints every event circusd publishes, one line each."""
from circus_plugins import CircusPlugin


class Printer(CircusPlugin):
    name = 'printer'

    def handle_recv(self, data):
        watcher, action, message = self.split_data(data)
        info = self.load_message(message)
        pid = info.get('process_pid', '')
        print('%-12s %-8s %s' % (watcher, action, pid), flush=True)
