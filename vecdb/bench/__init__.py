"""The ANN benchmark suite behind `vecdb bench`: recall vs QPS of vecdb against faiss and hnswlib.

Modules by phase: `datasets` (specs, exact ground truth, cache), `readers` (file formats) and
`minilm` (the numpy all-MiniLM-L6-v2 behind the minilm-384 dataset); `systems` (the contract and
registry), `peers` (faiss, hnswlib) and `vecdb_system` (vecdb through its SDK, embedded or over
gRPC via `server_process`), with `engine_features` isolating calls to SDK features still being
added; `metrics` (tie-aware recall, QPS, latency), `memory` (index memory in a fresh
subprocess), `build_memory` (peak and after-build memory of a build, in fresh processes),
`sampler` (RSS and file sizes over time), `environment` (provenance) and `run` (the
orchestrator); `report` (RESULTS.md and plots). `ingest` is a separate benchmark (`python -m
vecdb.bench.ingest`): streaming upserts into a `vecdb serve` child. Drives vecdb only through
`vecdb.connect` (and the `vecdb serve` command).
"""
