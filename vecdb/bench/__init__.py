"""The ANN benchmark suite behind `vecdb bench`: recall vs QPS of vecdb against faiss and hnswlib.

Modules by phase: `datasets` (specs, exact ground truth, cache) and `readers` (file formats);
`systems` (the contract and registry), `peers` (faiss, hnswlib) and `vecdb_system` (vecdb through
its SDK, embedded or over gRPC via `server_process`); `metrics` (tie-aware recall, QPS, latency),
`memory` (index memory in a fresh subprocess), `environment` (provenance) and `run` (the
orchestrator); `report` (RESULTS.md and plots). Drives vecdb only through `vecdb.connect`.
"""
