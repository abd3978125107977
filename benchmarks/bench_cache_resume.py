"""How long a rerun takes to read the LLM answer cache before its first send, on S3.

Puts --stored answers under ``s3://<bucket>/cache/llm/`` of a local S3 server (moto, as in the
tests; loopback, so each request costs far less than on real S3) and asks for --requests keys
(the stored ones plus new ones), two ways:

* ``one_by_one``: one ``get`` per request key (what resume did before: a read per request);
* ``load``: :meth:`AnswerCache.load` -- one listing, then concurrent reads of the keys present.

Prints one JSON object: seconds for each, reads issued, and the records found (must agree).

  python benchmarks/bench_cache_resume.py --stored 2000 --requests 3000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stored", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()

    import s3_server

    server = s3_server.start()
    try:
        os.environ.update(server.env)
        from selectllm.llm.cache import AnswerCache

        bucket = server.bucket()
        url = f"s3://{bucket}/cache/llm"
        keys = [f"{i:064x}" for i in range(args.requests)]
        fs = server.fs()
        body = json.dumps({"text": "[2]", "usd": 1e-5}).encode()
        fs.pipe({f"{bucket}/cache/llm/{k[:2]}/{k}.json": body for k in keys[:args.stored]})

        cache = AnswerCache(url)
        t0 = time.perf_counter()
        one = {k: rec for k in keys if (rec := cache.get(k)) is not None}
        t_one = time.perf_counter() - t0
        cache = AnswerCache(url)
        t0 = time.perf_counter()
        loaded = cache.load(keys)
        t_load = time.perf_counter() - t0
        print(json.dumps({"stored": args.stored, "requests": args.requests,
                          "one_by_one_s": round(t_one, 3), "one_by_one_reads": args.requests,
                          "load_s": round(t_load, 3), "load_reads": len(loaded), "load_listings": 1,
                          "speedup": round(t_one / t_load, 1), "same_records": one == loaded}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
