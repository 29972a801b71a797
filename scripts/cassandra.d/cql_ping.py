#!/usr/bin/env python3
"""Readiness probe for scripts/cassandra: a real CQL query over the native protocol (v4).

    cql_ping.py HOST PORT [USER PASSWORD]

Prints system.local's release_version and exits 0 when the node answers; exits 1 otherwise.
(No cqlsh on the machine; the accepting port alone does not mean the node serves queries.)
"""
import socket
import struct
import sys


def frame(stream, opcode, body):
    return struct.pack(">BBhBi", 4, 0, stream, opcode, len(body)) + body


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def recv_frame(sock):
    head = recv_exact(sock, 9)
    _, _, _, opcode, length = struct.unpack(">BBhBi", head)
    return opcode, recv_exact(sock, length)


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    user, password = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("cassandra", "cassandra")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(frame(0, 0x01, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")))
        opcode, body = recv_frame(sock)
        if opcode == 0x03:  # AUTHENTICATE: PasswordAuthenticator's SASL PLAIN token
            token = b"\0" + user.encode() + b"\0" + password.encode()
            sock.sendall(frame(0, 0x0F, struct.pack(">i", len(token)) + token))
            opcode, body = recv_frame(sock)
            if opcode != 0x10:  # AUTH_SUCCESS
                return 1
        elif opcode != 0x02:  # READY
            return 1
        query = b"SELECT release_version FROM system.local"
        sock.sendall(frame(1, 0x07, struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0)))
        opcode, body = recv_frame(sock)
        if opcode != 0x08 or struct.unpack(">i", body[:4])[0] != 2:  # RESULT, kind Rows
            return 1
        # Rows metadata: flags, column count, [keyspace, table], (name, type) per column.
        flags, ncols = struct.unpack(">ii", body[4:12])
        pos = 12
        if flags & 0x0002:  # has_more_pages: paging state bytes
            n = struct.unpack(">i", body[pos:pos + 4])[0]
            pos += 4 + max(n, 0)
        if flags & 0x0001:  # global table spec
            for _ in range(2):
                pos += 2 + struct.unpack(">H", body[pos:pos + 2])[0]
        for _ in range(ncols):
            pos += 2 + struct.unpack(">H", body[pos:pos + 2])[0]
            pos += 2  # type id (varchar carries no parameters)
        if struct.unpack(">i", body[pos:pos + 4])[0] < 1:
            return 1
        pos += 4
        n = struct.unpack(">i", body[pos:pos + 4])[0]
        print(body[pos + 4:pos + 4 + n].decode())
        return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ConnectionError, struct.error):
        sys.exit(1)
