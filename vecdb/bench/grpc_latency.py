"""Single-query latency over gRPC beside the embedded engine and a bare grpcio echo.

`python -m vecdb.bench.grpc_latency` answers one question of issue 12: what does the network
path add to one query, compared with what any grpcio call costs on the same machine? It builds
a SPANN collection from the first `--base` rows of a dataset, copies the database directory
(RocksDB locks a directory to one process), then times one call per query, round-robin in
short slices so load drift hits all alike: (1) embedded `search` on the copy, (2) the same
search through the SDK to a `vecdb serve` child on the original (`server_process`): on the
SDK's SearchStream lane, as an app's single searches go, and, beside it, through a second
client whose lane is closed, as Search calls, (3) a bare grpcio unary call to an echo child
(no vecdb code, no protobuf: bytes of the size of a search request in, the same bytes back),
and the same bytes echoed on one stream (the like-for-like floor of the lane), (4) a trivial
vecdb call (CollectionExists) to the same server: its fixed cost per call, and (5) with the floor on (the default), the same SDK search
to a plain grpcio server in a child process that hands the request straight to vecdb's
servicer on a third copy (no guard: no auth, metrics, quotas, request ids, admission): what
grpcio plus the engine in a server process cost before anything vecdb adds per call; that
server also times, in its handler thread, the engine's search and the whole servicer call
(decode, search, encode), so the report can say how much slower the same search runs there
than embedded. (6) The echo again with a handler that busy-waits, holding the GIL, for the
embedded p50 (measured on the timed queries after the warm-up): what a Python grpcio server
that did only the embedded work would answer in, i.e. the best the remote path can do. Every
path first runs `--warm` untimed passes over the timed queries (default 1): the first warm
read of a posting block after an open is CRC-checked on the ordinary search path, which
roughly doubles that query's time, and each of the three processes opens its own copy, so
without it the timed calls compare first reads more than the network path. It also times batch
searches both ways (QPS, wall; the best of BATCH_ROUNDS calls each, the two taking turns).
And it times the embedded search paced: each call after a pause as long as the echo's p50
(measured before), as a server's handler thread idles between one client's requests. On a
shared 2-core VM a search that follows a pause takes longer than one run back to back (its
caches went cold meanwhile), so the paced row says how much of remote - embedded is that,
which no server can avoid; the target keeps the back-to-back embedded p50. `--reuse DIR`
builds the collection once into DIR and copies it from there in later runs. Owns its echo and floor servers and the report; measures
nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecdb.bench.datasets import load_dataset
from vecdb.bench.options import at_least
from vecdb.bench.server_process import THREAD_VARS, ServerProcess

COLLECTION = "bench"
ECHO_METHOD = "/vecdb.bench.Echo/Echo"
SLICE = 50  # queries per system before switching to the next
WARM_CALLS = 20  # untimed calls a path gets at least before the timed ones
SPIN_METHOD = "/vecdb.bench.Echo/Spin"
CHAT_METHOD = "/vecdb.bench.Echo/Chat"
TIMINGS_METHOD = "/vecdb.bench.Echo/Timings"
ECHO_SERVER = """
import struct, sys, time
from concurrent import futures
import grpc
def echo(request, context):
    return request
def spin(request, context):  # busy for the seconds in the first 8 bytes, holding the GIL
    end = time.perf_counter() + struct.unpack_from("<d", request)[0]
    while time.perf_counter() < end:
        pass
    return request
def chat(requests, context):  # the echo on one stream: each message back as it comes
    for request in requests:
        yield request
handler = grpc.method_handlers_generic_handler("vecdb.bench.Echo", {
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
    "Spin": grpc.unary_unary_rpc_method_handler(spin),
    "Chat": grpc.stream_stream_rpc_method_handler(chat)})
server = grpc.server(futures.ThreadPoolExecutor(int(sys.argv[1])))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()  # until the parent closes our stdin
server.stop(0)
"""
FLOOR_SERVER = """
import json, statistics, sys, time
from concurrent import futures
import grpc
from vecdb.engine import Database
from vecdb.rpc.v1 import vecdb_pb2 as pb
from vecdb.server.app import pin_blas_threads
from vecdb.server.metrics import ServerMetrics
from vecdb.server.servicer import VectorDBServicer
pin_blas_threads(1)  # as `vecdb serve` does
db = Database(sys.argv[2])
servicer = VectorDBServicer(db, ServerMetrics(), 4)
times = {"engine": [], "servicer": []}  # seconds per Search, in the handler thread
def engine_search(*args, **kwargs):
    t0 = time.perf_counter()
    try:
        return db.search(*args, **kwargs)
    finally:
        times["engine"].append(time.perf_counter() - t0)
class Timed:  # the database, its search timed
    def __getattr__(self, name):
        return engine_search if name == "search" else getattr(db, name)
servicer._db = Timed()
def search(request, context):
    t0 = time.perf_counter()
    try:
        return servicer.Search(request, context)
    finally:
        times["servicer"].append(time.perf_counter() - t0)
def search_stream(requests, context):  # SearchStream, each request as `search` runs it
    for request in requests:
        yield search(request, context)
def timings(request, context):  # the p50s (ms) since the last call, then start over
    out = {k: statistics.median(v) * 1e3 if v else None for k, v in times.items()}
    for v in times.values():
        v.clear()
    return json.dumps(out).encode()
handler = grpc.method_handlers_generic_handler("vecdb.v1.VectorDB", {
    "Search": grpc.unary_unary_rpc_method_handler(
        search, request_deserializer=pb.SearchRequest.FromString,
        response_serializer=pb.SearchResponse.SerializeToString),
    "SearchStream": grpc.stream_stream_rpc_method_handler(
        search_stream, request_deserializer=pb.SearchRequest.FromString,
        response_serializer=pb.SearchResponse.SerializeToString)})
server = grpc.server(futures.ThreadPoolExecutor(int(sys.argv[1])))
server.add_generic_rpc_handlers((handler, grpc.method_handlers_generic_handler(
    "vecdb.bench.Echo", {"Timings": grpc.unary_unary_rpc_method_handler(timings)})))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()  # until the parent closes our stdin
server.stop(0)
db.close()
"""


class EchoServer:
    """A bare grpcio server in a child process whose one method returns its request (or,
    given another `script`, that script's server: it prints its port, serves until stdin
    closes), with the thread counts pinned as `ServerProcess` pins them."""

    def __init__(self, workers: int, script: str = ECHO_SERVER, *args: str) -> None:
        env = dict(os.environ)
        env.update(dict.fromkeys(THREAD_VARS, str(workers)))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(workers), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.address = f"127.0.0.1:{int(self.proc.stdout.readline())}"

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


BATCH_ROUNDS = 7  # batch calls per path, the paths alternated (3 in a row each swung 0.3-3x)


def _batch_qps(
    searches: dict[str, Callable[[Any], Any]], queries: npt.NDArray[np.float32], rounds: int
) -> dict[str, float]:
    """QPS of each path's best of `rounds` batch calls, the paths taking turns (and the
    turn order flipping) so that load drift on a shared host hits them alike."""
    best = dict.fromkeys(searches, np.inf)
    for r in range(rounds):
        for name in list(searches) if r % 2 == 0 else list(searches)[::-1]:
            t0 = time.perf_counter()
            searches[name](queries)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(queries) / t for name, t in best.items()}


def _batch_call(client: Any, params: dict[str, Any]) -> Callable[[Any], Any]:
    return lambda q: client.search(COLLECTION, q, k=10, params=params)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    import vecdb

    ds = load_dataset(args.dataset)
    base = np.ascontiguousarray(ds.base[: args.base])
    queries = np.ascontiguousarray(ds.queries[: args.queries])
    params = {"max_postings": args.max_postings}
    work = Path(tempfile.mkdtemp(prefix="vecdb-grpc-latency-"))
    server = echo = floor = None
    try:
        served, local, plain = work / "served", work / "local", work / "plain"
        built = _built(args, ds.metric, base, work / "built")
        shutil.copytree(built, served)
        shutil.copytree(served, local)
        if args.floor:
            shutil.copytree(served, plain)
        embedded = vecdb.connect(str(local))
        server = ServerProcess(served, args.threads)
        remote = vecdb.connect(f"grpc://{server.address}")
        echo = EchoServer(args.threads)
        channel = grpc.insecure_channel(echo.address)
        call = channel.unary_unary(ECHO_METHOD)
        req_size = len(
            remote_request_bytes(queries[:1], params)  # the bytes a one-query Search sends
        )
        payload = bytes(req_size)

        def one(client: Any) -> Callable[[int], Any]:
            return lambda i: client.search(COLLECTION, queries[i : i + 1], k=10, params=params)

        unary = vecdb.connect(f"grpc://{server.address}", search_stream=False)
        chat, end_chat = _stream_echo(channel)
        systems: dict[str, Callable[[int], Any]] = {
            "embedded": one(embedded),
            "remote": one(remote),
            "unary": one(unary),
            "echo": lambda i: call(payload, timeout=10),
            "stream_echo": lambda i: chat(payload),
            "trivial": lambda i: remote.collection_exists(COLLECTION),
        }
        if args.floor:
            floor = EchoServer(args.threads, FLOOR_SERVER, str(plain))
            floor_client = vecdb.connect(f"grpc://{floor.address}")
            floor_channel = grpc.insecure_channel(floor.address)
            floor_timings = floor_channel.unary_unary(TIMINGS_METHOD)
            systems["floor"] = one(floor_client)
        # Warm-up: connections, kernels, caches, and every posting block the timed queries
        # read CRC-checked once in each process (a block's first warm read after an open
        # costs its query the ordinary path and the CRC: ~2x a query's time)
        warm(systems, len(queries), args.warm)
        # The spin call's handler holds the GIL as long as a warm embedded search takes (its
        # p50 over the timed queries, one more pass): what any grpcio server doing that work
        # in Python costs at least.
        spin_s = _p50_seconds(systems["embedded"], len(queries), 0)
        spin = channel.unary_unary(SPIN_METHOD)
        spin_payload = struct.pack("<d", spin_s) + bytes(max(0, req_size - 8))
        systems["spin"] = lambda i: spin(spin_payload, timeout=10)
        warm({"spin": systems["spin"]}, min(len(queries), WARM_CALLS), 1)
        # The pause of the paced embedded path: a bare round trip, as a server idles per call.
        pause = {"paced": _p50_seconds(systems["echo"], min(len(queries), WARM_CALLS * 5), 0)}
        systems["paced"] = systems["embedded"]
        if args.floor:
            floor_timings(b"", timeout=10)  # start the server-side timings over
        lat: dict[str, list[float]] = {name: [] for name in systems}
        for lo in range(0, len(queries), SLICE):
            for name, f in systems.items():
                for i in range(lo, min(lo + SLICE, len(queries))):
                    if name in pause:
                        time.sleep(pause[name])
                    t0 = time.perf_counter()
                    f(i)
                    lat[name].append((time.perf_counter() - t0) * 1e3)
        out: dict[str, Any] = {name: _percentiles(ms) for name, ms in lat.items()}
        out["spin"]["handler_ms"] = spin_s * 1e3
        out["paced"]["pause_ms"] = pause["paced"] * 1e3
        if args.floor:
            out["floor"]["server_ms"] = json.loads(floor_timings(b"", timeout=10))
        batch = queries[: args.batch]
        calls = {"embedded": _batch_call(embedded, params), "remote": _batch_call(remote, params)}
        for name, qps in _batch_qps(calls, batch, BATCH_ROUNDS).items():
            out[name]["batch_qps"] = qps
        out["request_bytes"] = req_size
        # searches the remote client answered on its SearchStream (the rest: Search calls)
        out["remote"]["on_stream"] = remote._lane.sent  # type: ignore[attr-defined]
        out["config"] = {
            "dataset": args.dataset, "base": len(base), "queries": len(queries),
            "batch": len(batch), "max_postings": args.max_postings, "threads": args.threads,
            "warm": args.warm,
        }  # fmt: skip
        embedded.close()
        remote.close()
        unary.close()
        end_chat()
        channel.close()
        if floor is not None:
            floor_client.close()
            floor_channel.close()
        return out
    finally:
        if server is not None:
            server.stop()
        for child in (echo, floor):
            if child is not None:
                child.stop()
        shutil.rmtree(work, ignore_errors=True)


def _stream_echo(channel: Any) -> tuple[Callable[[bytes], Any], Callable[[], None]]:
    """(send one message on a Chat stream and wait for it back, end the stream)."""
    feed: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def requests() -> Iterator[bytes]:
        while (item := feed.get()) is not None:
            yield item

    responses = channel.stream_stream(CHAT_METHOD)(requests())

    def ping(payload: bytes) -> Any:
        feed.put(payload)
        return next(responses)

    return ping, lambda: feed.put(None)


def warm(systems: dict[str, Callable[[int], Any]], n: int, passes: int) -> None:
    """Call every path with each of the n query indices, `passes` times over, untimed; at
    least WARM_CALLS calls a path (connections and kernels), even with passes 0."""
    for f in systems.values():
        for i in range(max(passes * n, min(n, WARM_CALLS))):
            f(i % n)


def _p50_seconds(f: Callable[[int], Any], n: int, skip: int) -> float:
    """The p50 of f(skip) ... f(n - 1), timed one by one after f(0) ... f(skip - 1)."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        f(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[skip:]))


def _built(args: argparse.Namespace, metric: str, base: npt.NDArray[np.float32],
           fresh: Path) -> Path:  # fmt: skip
    """A database directory holding the built collection: `fresh` built now, or with
    `--reuse DIR` the one built into DIR by an earlier run with the same dataset and base
    (the build is minutes of every run; what is timed only reads the copies)."""
    key = json.dumps({"dataset": args.dataset, "base": len(base), "metric": metric})
    where = fresh if args.reuse is None else args.reuse / "db"
    marker = where.parent / (where.name + ".json")
    if args.reuse is not None and marker.is_file() and marker.read_text() == key:
        return where
    shutil.rmtree(where, ignore_errors=True)
    where.parent.mkdir(parents=True, exist_ok=True)
    import vecdb

    with vecdb.connect(str(where)) as db:
        db.create_collection(COLLECTION, dim=base.shape[1], metric=metric, index="spann")
        for lo in range(0, len(base), 20_000):
            ids = np.arange(lo, min(lo + 20_000, len(base)), dtype=np.int64)
            db.upsert(COLLECTION, ids=ids, vectors=base[lo : lo + 20_000])
        db.optimize(COLLECTION, wait=True)
    if args.reuse is not None:
        marker.write_text(key)
    return where


def remote_request_bytes(queries: npt.NDArray[np.float32], params: dict[str, Any]) -> bytes:
    """The serialized SearchRequest of these queries (the echo sends as many bytes)."""
    from vecdb.client.remote import search_request

    req = search_request(COLLECTION, queries, 10, None, params, False, False, None, None)
    data: bytes = req.SerializeToString()
    return data


def report(r: dict[str, Any]) -> str:
    e, m, x = r["embedded"], r["remote"], r["echo"]
    gap = m["p50"] - e["p50"]

    def row(label: str, path: dict[str, Any], qps: str = "-") -> str:
        return f"| {label} | {path['p50']:.3f} | {path['p99']:.3f} | {qps} |"

    def over_echo(hi: dict[str, Any], lo: dict[str, Any]) -> str:
        """`hi` p50 - `lo` p50, in ms and in echo p50s."""
        d = hi["p50"] - lo["p50"]
        return f"{d:.3f} ms = {d / x['p50']:.2f}x the echo p50"

    lines = [
        "| path | p50 ms | p99 ms | batch QPS (wall) |",
        "|---|---|---|---|",
        row("embedded", e, f"{e['batch_qps']:,.0f}"),
        row("remote (gRPC, SDK)", m, f"{m['batch_qps']:,.0f}"),
    ]
    if "unary" in r:  # the SDK with its search lane closed: every search a Search call
        lines.append(row("remote, Search calls only (SDK)", r["unary"]))
    lines.append(row(f"bare grpcio echo ({r['request_bytes']} B)", x))
    if "stream_echo" in r:
        lines.append(row("bare grpcio echo on one stream", r["stream_echo"]))
    if "spin" in r:  # the echo, its handler busy for the embedded p50: grpcio's floor
        sp = r["spin"]
        lines.append(row(f"echo + {sp['handler_ms']:.3f} ms busy handler (holds the GIL)", sp))
    if "trivial" in r:  # the server's fixed cost per call, without the search
        lines.append(row("remote CollectionExists (SDK)", r["trivial"]))
    if "paced" in r:  # the embedded search after a pause, as a server's handler idles
        pc = r["paced"]
        lines.append(row(f"embedded, each call after a {pc['pause_ms']:.3f} ms pause", pc))
    if "floor" in r:  # grpcio + the servicer, no guard
        lines.append(row("floor: plain grpcio server + servicer (SDK)", r["floor"]))
    lines += [
        "",
        f"remote p50 - embedded p50 = {over_echo(m, e)} (target <= 1.2x); remote / embedded "
        f"batch QPS = {m['batch_qps'] / e['batch_qps']:.2f} (target >= 0.9).",
    ]
    if "on_stream" in m:
        lines.append(f"the remote client answered {m['on_stream']:,} of its searches on its "
                     "SearchStream (the rest, if any, as Search calls).")  # fmt: skip
    if "stream_echo" in r:
        lines.append(f"against the echo on one stream (like for like): remote - embedded = "
                     f"{gap / r['stream_echo']['p50']:.2f}x its p50.")  # fmt: skip
    if "unary" in r:
        lines.append(f"Search calls only: remote p50 - embedded p50 = {over_echo(r['unary'], e)}.")
    if "spin" in r:
        lines.append(f"busy-handler echo p50 - embedded p50 = {over_echo(r['spin'], e)} (a "
                     "Python grpcio server that only spent the embedded time would be here).")  # fmt: skip
    if "paced" in r:
        lines.append(f"against the paced embedded search (caches as cold as a server's): remote "
                     f"p50 - paced embedded p50 = {over_echo(m, r['paced'])} (the target keeps "
                     "the back-to-back embedded p50).")  # fmt: skip
    if "floor" in r and r["floor"].get("server_ms"):
        ms = r["floor"]["server_ms"]
        lines.append(f"in the floor server's handler thread: engine search p50 "
                     f"{ms['engine']:.3f} ms, servicer (decode + search + encode) p50 "
                     f"{ms['servicer']:.3f} ms (embedded search p50 {e['p50']:.3f} ms).")  # fmt: skip
    if "floor" in r:
        f = r["floor"]
        lines.append(f"floor p50 - embedded p50 = {over_echo(f, e)}; remote p50 - floor p50 = "
                     f"{m['p50'] - f['p50']:.3f} ms (vecdb's per-call layer: guard, auth, "
                     "metrics, quotas, request ids).")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="glove-50")
    ap.add_argument("--base", type=at_least(1), default=200_000, help="first N base rows")
    ap.add_argument("--queries", type=at_least(1), default=1000, help="queries timed one by one")
    ap.add_argument("--batch", type=at_least(1), default=1000, help="queries of the batch QPS call")
    ap.add_argument("--max-postings", type=at_least(1), default=48)
    ap.add_argument("--warm", type=at_least(0), default=1,
                    help="untimed passes over the timed queries on every path first (0: only "
                         f"{WARM_CALLS} calls; the first pass after an open CRC-checks each "
                         "posting block it reads)")  # fmt: skip
    ap.add_argument("--threads", type=at_least(1), default=2, help="server and echo worker threads")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the plain grpcio + servicer server (a third copy of the data)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="append the result as a JSON line")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="build the collection into this directory once and copy it from "
                         "there in later runs (same dataset and --base)")  # fmt: skip
    args = ap.parse_args(argv)
    r = run(args)
    print(report(r))
    if args.json is not None:
        with args.json.open("a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
