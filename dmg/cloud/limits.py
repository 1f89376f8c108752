"""What one request to the cloud's API may carry: the cloud's schemas refuse more, its
clients send no more. Plain constants, so a node reads them without importing the cloud's
schemas (pydantic) or its HTTP client."""

from __future__ import annotations

#: File results one request may carry (a shard sends more in several requests).
MAX_FILE_RESULTS = 1000
#: Items one batch of reports may carry (a node sends more in several requests).
MAX_BATCH_ITEMS = 1000
