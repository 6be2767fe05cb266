"""Limits and settings of vecdb, each with its named bounds.

A leaf module: imports nothing from vecdb. Request caps (batch size, k, id length, payload
size, names) live here so the engine, the server and the docs quote one number. Index
parameters live in `vecdb.index.params`; server settings are loaded by `vecdb.server.config`.
"""

from __future__ import annotations

import re

# Collections and tenants are named like identifiers so a name is safe as a path component.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NAME_LEN = 64

MIN_DIM = 1
MAX_DIM = 65_536

DEFAULT_K = 10
MAX_K = 16_384  # same cap as Milvus

MAX_BATCH = 65_536  # points per upsert/get/delete request
MAX_QUERIES = 16_384  # queries per search request

MAX_STR_ID_BYTES = 256  # UTF-8 bytes of a string id
MIN_INT_ID = 0
MAX_INT_ID = 2**63 - 1

MAX_PAYLOAD_BYTES = 65_536  # serialised JSON size of one payload

# gRPC messages: the server's `limits.max_message_bytes` (per request and per answer) and its
# bounds; the SDK splits requests at half of it (`vecdb.client.splits`)
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MIN_MAX_MESSAGE_BYTES, MAX_MAX_MESSAGE_BYTES = 1024 * 1024, 1024 * 1024 * 1024
# The least wire bytes of one search hit (a float32 distance, a one-byte id): a search of nq
# queries and k answers up to nq x k hits, which a server's engine holds whole, so a server
# refuses one whose hits could not fit its message limit before it runs, and the SDK splits
# such a batch by queries
MIN_HIT_BYTES = 5
MAX_PAYLOAD_DEPTH = 32

# float32 max is ~3.4e38; a component beyond this makes squared norms overflow float32.
MAX_ABS_COMPONENT = 1e18
# Squared norms above this would make a squared L2 distance (up to 4x) overflow float32.
MAX_SQ_NORM = 3.4e38 / 4

DEFAULT_PORT = 7700
DEFAULT_METRICS_PORT = 7701
DEFAULT_DATA_DIR = "./vecdb-data"
