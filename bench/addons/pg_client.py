"""The same read-only pgbench-like load from anywhere: N processes, each one connection, each
transaction one `SELECT abalance FROM pgbench_accounts WHERE aid = :random` (pgbench -S).

    python pg_client.py URL SECONDS CLIENTS  ->  one JSON line: tps and latency percentiles
"""

import json
import multiprocessing
import random
import sys
import time


def worker(url: str, seconds: float, out) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    latencies = []
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM pgbench_accounts").fetchone()[0]
        deadline = time.perf_counter() + seconds
        while (start := time.perf_counter()) < deadline:
            conn.execute("SELECT abalance FROM pgbench_accounts WHERE aid = %s", (random.randint(1, rows),)).fetchone()
            latencies.append(time.perf_counter() - start)
    out.put(latencies)


def main() -> None:
    url, seconds, clients = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(url, seconds, queue)) for _ in range(clients)]
    for p in procs:
        p.start()
    latencies = sorted(x for _ in procs for x in queue.get())
    for p in procs:
        p.join()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(json.dumps({"tps": len(latencies) / seconds, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                      "transactions": len(latencies)}))


if __name__ == "__main__":
    main()
