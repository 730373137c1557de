#!/usr/bin/env python3
"""How much of the machine other processes took, for benchmarks on a shared host.

  contention.py run LOG -- CMD ARGS...   run CMD (its stdout and stderr pass
      through, its exit status is returned) and append to LOG the share of all
      CPUs' time that processes other than CMD and its children used while it
      ran: (non-idle time from /proc/stat - CMD's user+system time) / (wall
      time * CPUs), 0..1.  A one-core busy loop on 2 CPUs reads ~0.5.
  contention.py wait MAX SECONDS   sample 1 s windows until the whole machine's
      non-idle share is below MAX (no benchmark runs then, so it is all other
      work) or SECONDS have passed; prints the last share.
"""
import os, resource, subprocess, sys, time


def stat():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])  # busy, total (guest time is inside user)


def main():
    tick = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    if sys.argv[1] == "run":
        log, cmd = sys.argv[2], sys.argv[sys.argv.index("--") + 1:]
        b0, _ = stat()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        rc = subprocess.call(cmd)
        wall = time.monotonic() - t0
        b1, _ = stat()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        others = max(0.0, (b1 - b0) / tick - ours) / max(wall * ncpu, 1e-9)
        with open(log, "a") as f:
            f.write(f"{min(others, 1.0):.3f}\n")
        sys.exit(rc)
    if sys.argv[1] == "wait":
        limit, seconds = float(sys.argv[2]), float(sys.argv[3])
        end = time.monotonic() + seconds
        while True:
            b0, t0 = stat()
            time.sleep(1)
            b1, t1 = stat()
            share = (b1 - b0) / max(t1 - t0, 1)
            if share < limit or time.monotonic() >= end:
                print(f"{share:.3f}")
                return
    sys.exit(f"usage: {sys.argv[0]} run LOG -- CMD... | wait MAX SECONDS")


main()
