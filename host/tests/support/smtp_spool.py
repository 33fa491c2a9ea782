"""A real SMTP server on loopback that spools what it accepts.

aiosmtpd speaks the protocol. Every message it accepts is written, before
the server answers 250, as one JSON file ({"mail_from", "rcpt_tos",
"data"}) named by its arrival number in the folder given as the first
argument; so once a client has its answer, the message is on disk. The
first line on stdout is the port it listens on. It stops when stdin
closes.
"""

import json
import os
import socket
import sys

from aiosmtpd.controller import Controller


class Spool:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Scripted refusals: for good, and for now.
        if address.startswith("refused@"):
            return "550 5.1.1 No such user here"
        if address.startswith("later@"):
            return "451 4.3.0 Try again later"
        if address.startswith("locked@"):
            return "530 5.7.0 Authentication required"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        message = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        path = os.path.join(self.folder, "%08d.json" % self.count)
        with open(path + ".part", "w") as file:
            json.dump(message, file)
        os.rename(path + ".part", path)
        return "250 2.0.0 Ok: queued"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    port = free_port()
    controller = Controller(Spool(sys.argv[1]), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()
