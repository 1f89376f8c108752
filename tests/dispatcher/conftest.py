"""Fixtures of the dispatcher tests: the S3 server (moto) for planning splits to S3."""

from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401
