"""Fixtures of the worker tests: the S3 server (moto) for part shards to S3. (A real Redis
broker of a test's own, ``broker``, is in tests/conftest.py.)"""

from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401
