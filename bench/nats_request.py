"""A minimal NATS client for bench/backlog-memory.sh, so the script needs no NATS CLI.

    nats_request.py URL SUBJECT [PAYLOAD]               request/reply, prints the reply
    nats_request.py URL --publish-jobs NAMESPACE SUBSCRIPTION IDS_FILE
                                                        one delivery job per line of IDS_FILE
"""

import json
import socket
import sys
from urllib.parse import urlparse


def connect(url):
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222))
    reader = sock.makefile("rb")
    reader.readline()  # INFO
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
    return sock, reader


def next_message(sock, reader):
    """The payload of the next message delivered to a subscription; answers the server's
    PINGs on the way and stops the script on an error or a closed connection."""
    while True:
        line = reader.readline()
        if not line:
            raise SystemExit("nats: connection closed")
        if line.startswith(b"-ERR"):
            raise SystemExit(f"nats: {line.decode().strip()}")
        if line.startswith(b"PING"):
            sock.sendall(b"PONG\r\n")
        elif line.startswith(b"MSG") or line.startswith(b"HMSG"):
            size = int(line.split()[-1])
            return reader.read(size + 2)[:-2]


def request(url, subject, payload=b""):
    sock, reader = connect(url)
    sock.sendall(b"SUB _INBOX.bench 1\r\n")
    sock.sendall(b"PUB %s _INBOX.bench %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))
    return next_message(sock, reader)


def publish_jobs(url, namespace, subscription, ids_file):
    """Publishes with a reply subject and waits for every JetStream ack, a window at a time:
    without acks the server may drop messages it cannot store fast enough."""
    sock, reader = connect(url)
    sock.sendall(b"SUB _INBOX.acks 1\r\n")
    with open(ids_file) as ids:
        delivery_ids = [line.strip() for line in ids if line.strip()]
    stored = failed = 0
    window = 2000
    for start in range(0, len(delivery_ids), window):
        chunk = []
        for delivery_id in delivery_ids[start:start + window]:
            body = json.dumps(
                {"delivery_id": delivery_id, "subscription_id": subscription}).encode()
            headers = b"NATS/1.0\r\nNats-Msg-Id: %s.0\r\n\r\n" % delivery_id.encode()
            subject = f"{namespace}.deliveries.{delivery_id}".encode()
            chunk.append(b"HPUB %s _INBOX.acks %d %d\r\n%s%s\r\n" % (
                subject, len(headers), len(headers) + len(body), headers, body))
        sock.sendall(b"".join(chunk))
        for _ in chunk:
            ack = json.loads(next_message(sock, reader))
            if "error" in ack:
                failed += 1
            else:
                stored += 1
    print(f"published {len(delivery_ids)} jobs: {stored} acknowledged, {failed} refused")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[2] == "--publish-jobs":
        publish_jobs(sys.argv[1], *sys.argv[3:6])
    else:
        payload = sys.argv[3].encode() if len(sys.argv) > 3 else b""
        print(request(sys.argv[1], sys.argv[2], payload).decode(errors="replace"))
