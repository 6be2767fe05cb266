"""Vector indexes over internal slots: flat (exact) and SPANN (disk-hybrid).

Indexes see only int64 slots, float32 vectors, file paths and parameters; they never open
RocksDB and know nothing about user ids, payloads or tenants (the engine owns those).
"""
