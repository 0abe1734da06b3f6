"""A real FTP server for the tests (pyftpdlib), run as its own process so a test can kill it:

    python ftp_server.py PORT ROOT USER PASSWORD CERT KEY     FTP with explicit TLS required
    python ftp_server.py PORT ROOT USER PASSWORD --plain      plain FTP
"""

from __future__ import annotations

import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

READER = "lecteur"


def main() -> None:
    port, root, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    authorizer.add_user(READER, password, root, perm="elr")  # may list and read, not write
    handler: type[FTPHandler]
    if sys.argv[5] == "--plain":
        handler = FTPHandler
    else:
        handler = TLS_FTPHandler
        handler.certfile, handler.keyfile = sys.argv[5], sys.argv[6]
        handler.tls_control_required = True
        handler.tls_data_required = True
    handler.authorizer = authorizer
    handler.passive_ports = None
    server = ThreadedFTPServer(("127.0.0.1", port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
