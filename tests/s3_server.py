"""A local S3-compatible server for tests: moto's server mode on 127.0.0.1 (loopback only).

Clients find it the standard way, through ``AWS_ENDPOINT_URL`` (botocore/s3fs and pyarrow's
S3FileSystem both honour it), with dummy credentials in ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``: exactly how a real deployment passes a MinIO/Ceph endpoint and the
credentials of the provider chain.  ``SECRET`` is distinctive so tests can check it never shows
up in logs or outputs.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

SECRET = "selectllm-test-secret-" + uuid.uuid4().hex[:12]


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)  # what a client process needs
    _server: object = None

    def fs(self):
        """An s3fs filesystem on this server (fresh listings every call)."""
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key=self.env["AWS_ACCESS_KEY_ID"],
                                 secret=self.env["AWS_SECRET_ACCESS_KEY"], use_listings_cache=False,
                                 skip_instance_cache=True)

    def bucket(self, name: str | None = None) -> str:
        """A new, empty bucket; returns its name."""
        name = name or f"bkt-{uuid.uuid4().hex[:10]}"
        self.fs().mkdir(name)
        return name

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def start() -> S3Server:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "selectllm-test-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on a laptop/CI
    }
    return S3Server(endpoint=endpoint, env=env, _server=server)


def client_env(server: S3Server, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the server's variables, and no other AWS profile."""
    env = dict(os.environ if base is None else base)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        env.pop(k, None)
    env.update(server.env)
    return env
