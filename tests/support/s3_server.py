"""A real S3-compatible server for tests: moto's server mode on 127.0.0.1, on a free port."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from seg.errors import install_hint

#: The environment the server is reached with (boto3, and so LitData, read these).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def s3_server(bucket: str, timeout_s: float = 600) -> Iterator[dict[str, Any]]:
    """Run a moto S3 server with ``bucket`` created; yields ``{"endpoint", "bucket", "env"}``.

    The server stops when the block ends, and after ``timeout_s`` seconds whatever happens, so a
    hung test cannot leave it running. Skips the test when moto or litdata is not installed.
    """
    pytest.importorskip("litdata", reason=f"litdata is not installed: {install_hint('stream')}")
    moto_server = pytest.importorskip("moto.server", reason=f"moto is not installed: {install_hint('dev')}")
    boto3 = pytest.importorskip("boto3", reason=f"boto3 is not installed: {install_hint('stream')}")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    watchdog = threading.Timer(timeout_s, server.stop)
    watchdog.daemon = True
    watchdog.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=10).close()  # up and answering
        client = boto3.client("s3", endpoint_url=endpoint, **_lower(CREDENTIALS))
        client.create_bucket(Bucket=bucket)
        yield {"endpoint": endpoint, "bucket": bucket, "env": {"AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}}
    finally:
        watchdog.cancel()
        server.stop()


def _lower(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }
