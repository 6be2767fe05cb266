"""The multi-vector (late interaction, MaxSim) benchmark: `vecdb bench --multivector TIERS`.

Modules by phase: `corpus` (standard-library docstrings), `embed` (token vectors of each tier
and their cache), `scoring` (the harness's numba MaxSim kernels and the float64 reference),
`truth` (exact MaxSim scores, cached), `metrics`, `systems` (exact, peers, the paper's code
baselines, vecdb's MultiVectorIndex), `configs` (the matrix), `run` (JSONL rows), `report`
(RESULTS.md section, target lines, plots). research/multivector.md section 5 is the design.
"""
