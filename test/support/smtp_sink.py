"""A real SMTP server on 127.0.0.1 for the notification tests.

Usage: python3 smtp_sink.py DIR

Listens on a free port (aiosmtpd, Debian's python3-aiosmtpd), prints
"PORT <n>" on stdout once it accepts connections, and saves every message
it receives as DIR/<k>.eml (the DATA bytes as sent) with DIR/<k>.env
holding the envelope: the MAIL FROM address on the first line and one RCPT
TO address a line after it. Exits when stdin closes (the test's port is
gone).
"""

import os
import socket
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            k = self.count
        base = os.path.join(self.directory, str(k))
        with open(base + ".env.tmp", "w", encoding="utf-8") as f:
            f.write(envelope.mail_from + "\n")
            for rcpt in envelope.rcpt_tos:
                f.write(rcpt + "\n")
        with open(base + ".eml.tmp", "wb") as f:
            content = envelope.original_content or envelope.content
            if isinstance(content, str):
                content = content.encode("utf-8")
            f.write(content)
        # the .eml appears last, complete
        os.rename(base + ".env.tmp", base + ".env")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 Message accepted for delivery"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
