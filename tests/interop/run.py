#!/usr/bin/env python3
"""The interop suite: the panoptes binary against real peers on 127.0.0.1.
Prints PASS/FAIL per check and a closing `interop: N passed, N failed`."""
import argparse, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_fulldisk  # noqa: E402
import test_ingest  # noqa: E402
import test_push  # noqa: E402
import test_promql_diff  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/panoptes")
    ap.add_argument("--only", default="", help="run only suites whose name contains this")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    suites = [("ingest", test_ingest.run), ("push", test_push.run), ("promql-diff", test_promql_diff.run),
              ("fulldisk", test_fulldisk.run)]
    try:
        for name, fn in suites:
            if a.only in name:
                print(f"-- {name}", flush=True)
                fn(binary)
    finally:
        harness.finish()


if __name__ == "__main__":
    main()
