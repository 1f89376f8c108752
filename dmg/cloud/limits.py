"""What one request to the cloud's API may carry: the cloud's schemas refuse more, its
clients send no more. Plain constants, so a node reads them without importing the cloud's
schemas (pydantic) or its HTTP client."""

from __future__ import annotations

#: File results one request may carry (a shard sends more in several requests).
MAX_FILE_RESULTS = 1000
#: Items one batch of reports may carry (a node sends more in several requests).
MAX_BATCH_ITEMS = 1000
#: Activity run ids a claim sent after a failed one may name as held (``again``); a
#: dispatcher holding more names these (the others, sent again, replay their recorded plans).
MAX_CLAIM_AGAIN = 4096
#: JSON values (keys, items, leaves) one request body may hold at most (the cloud refuses
#: a larger body as a whole: :func:`dmg.definitions.check_shape`).
MAX_BODY_VALUES = 20_000
#: A file result's fields the cloud fills in when a report leaves them out, with the value
#: it fills in (:class:`dmg.cloud.schemas.FileResultIn`'s defaults; a test keeps them equal).
FILE_RESULT_DEFAULTS: dict[str, object] = {
    "source": "", "bytes": 0, "checksum": "", "verified": "", "error": "", "tries": 0,
    "started": None, "ended": None}
