"""A ping server for the end-to-end tests: real HTTP (or HTTPS) on loopback that records
every request it receives and answers each with one status.

    python3 ping_server.py --record FILE --port-file FILE [--cert PEM --key PEM] [--status N]

Binds 127.0.0.1 on a free port and writes the port to the port file (to a temporary name,
then renamed: a reader never sees half a number) once it listens. Each request appends one
line to the record file, flushed before the answer goes out, so that a client that got
its answer will find its request recorded:

    METHOD <TAB> hex(path, query included) <TAB> hex(body) <NEWLINE>

Hex, so that any byte of a path or body survives and the Rust side needs no JSON parser.
The answer is `--status` (default 200) with the body `OK`, as healthchecks.io's. Standard
library only: the test bed needs nothing but python3.
"""

import argparse
import http.server
import os
import ssl
import sys
import threading


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args()

    lock = threading.Lock()
    record = open(args.record, "ab")

    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.1: keep-alive as a real server does; every answer has a Content-Length.
        protocol_version = "HTTP/1.1"

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            line = "%s\t%s\t%s\n" % (self.command, self.path.encode("latin-1").hex(), body.hex())
            with lock:
                record.write(line.encode("ascii"))
                record.flush()
            answer = b"OK"
            self.send_response(args.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_HEAD = do_PUT = handle_any

        def log_message(self, format, *log_args):
            sys.stderr.write("ping_server: %s\n" % (format % log_args))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)

    temporary = args.port_file + ".tmp"
    with open(temporary, "w") as port_file:
        port_file.write("%d\n" % server.server_address[1])
    os.rename(temporary, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
