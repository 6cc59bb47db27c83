"""`python -m repro.build SPEC`: the child process `repro.build.child` starts (one per rank)."""

import gc
import sys

from repro.build.run import rebuild_main

if __name__ == "__main__":
    # A build child spends most of its start-up importing torch, torch._dynamo and datasets: about a
    # million long-lived objects, which the cyclic collector would otherwise scan again and again (its
    # first generation runs every 700 allocations). At 100,000 young cycles are still collected, and a
    # digits build takes 4.1-4.7 s of CPU instead of 4.9-5.7 s, with the same weights (BENCHMARKS.md).
    # Collection only frees unreachable objects, so it decides no bit.
    gc.set_threshold(100_000, 50, 100)
    sys.exit(rebuild_main(sys.argv[1]))
