"""Fixtures of the worker tests: the S3 server (moto) for part shards to S3."""

from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401
