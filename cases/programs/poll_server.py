"""A single-threaded TCP server: one process, one thread, one poll loop (selectors) for every connection.

    python3 poll_server.py FAMILY ADDRESS PORT

Each request is a line; the answer is "<request> served by pid <pid> thread <thread id>\\n". It logs
one line per event on stdout (listening, accepted, request, closed) and runs until it is stopped.
Used by cases/test_server_design.py (ONE-PROCESS).
"""

import os
import selectors
import socket
import sys
import threading


def log(text):
    print(text, flush=True)


def main():
    family = socket.AF_INET6 if sys.argv[1] == "ipv6" else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((sys.argv[2], int(sys.argv[3])))
    listener.listen(16)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    buffers = {}
    me = f"pid {os.getpid():07d} thread {threading.get_ident():020d}"    # fixed width: same segment sizes every run
    log(f"listening {me}")
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is listener:
                conn, peer = listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                log(f"accepted {peer[0]} {peer[1]}")
                continue
            data = sock.recv(4096)
            if not data:
                log(f"closed {sock.getpeername()[1]}")
                sel.unregister(sock)
                del buffers[sock]
                sock.close()
                continue
            buffers[sock] += data
            while b"\n" in buffers[sock]:
                line, buffers[sock] = buffers[sock].split(b"\n", 1)
                request = line.decode()
                log(f"request {sock.getpeername()[1]} {request}")
                sock.sendall(f"{request} served by {me}\n".encode())


if __name__ == "__main__":
    main()
