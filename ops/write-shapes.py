#!/usr/bin/env python3
"""The kernel's cost of a write shape, without the node: what a shard journal would save.

    taskset -c 0 python3 ops/write-shapes.py [DIR] [TOTAL_MIB]

Writes TOTAL_MIB (default 256) with O_DIRECT pwrite(2) at queue depth 1 in four shapes,
each into files zero-filled first (so every write overwrites written extents, as the
node's writes into its zero-filled reserve do), with an fdatasync of every file written
since the last sync each 16 MiB (the node's sync round under fsync `always`):
  - 1,024 files, 16 KiB each write, round robin (a partition per file, a batch per write);
  - one file, 16 KiB writes (the same writes, one file: what the per-file syncs cost);
  - one file, 1 MiB writes (the same bytes coalesced, as a journal would write them);
  - 16 files, 64 KiB writes (the node's 16-partition shape).
Prints throughput and the process's user and system CPU per write and per MB
(getrusage). DIR defaults to /var/tmp/sluice-write-shapes (removed at the end); it must
be on the file system under test. Run each shape twice: this VM's disk varies by hour.
"""
import mmap
import os
import resource
import shutil
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/sluice-write-shapes"
TOTAL = (int(sys.argv[2]) if len(sys.argv) > 2 else 256) << 20
SYNC_EVERY = 16 << 20
ZERO = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def shape(name, files, write_bytes):
    per_file = TOTAL // files
    fds = []
    for i in range(files):
        fd = os.open(f"{DIR}/{i}", os.O_CREAT | os.O_RDWR | os.O_TRUNC | os.O_DIRECT)
        for off in range(0, per_file, 1 << 20):
            os.pwrite(fd, memoryview(ZERO)[: min(1 << 20, per_file - off)], off)
        os.fsync(fd)
        fds.append(fd)
    buf = mmap.mmap(-1, write_bytes)
    buf.write(b"x" * write_bytes)
    offsets, dirty = [0] * files, set()
    done = since = writes = syncs = 0
    (u0, s0), t0 = cpu(), time.monotonic()
    while done < TOTAL:
        for i in range(files):
            os.pwrite(fds[i], buf, offsets[i])
            offsets[i] += write_bytes
            done += write_bytes
            since += write_bytes
            writes += 1
            dirty.add(i)
            if since >= SYNC_EVERY or done >= TOTAL:
                for j in dirty:
                    os.fdatasync(fds[j])
                    syncs += 1
                dirty.clear()
                since = 0
            if done >= TOTAL:
                break
    elapsed, (u1, s1) = time.monotonic() - t0, cpu()
    mb = TOTAL / 1e6
    print(
        f"{name:24s} {mb / elapsed:7.0f} MB/s  per write: user {1e6 * (u1 - u0) / writes:5.1f} us, "
        f"system {1e6 * (s1 - s0) / writes:5.1f} us  per MB: system {1e6 * (s1 - s0) / mb:6.0f} us  "
        f"({writes} writes, {syncs} syncs)"
    )
    for i, fd in enumerate(fds):
        os.close(fd)
        os.unlink(f"{DIR}/{i}")


os.makedirs(DIR, exist_ok=True)
try:
    for _ in range(2):
        shape("1,024 files x 16 KiB", 1024, 16 << 10)
        shape("1 file x 16 KiB", 1, 16 << 10)
        shape("1 file x 1 MiB", 1, 1 << 20)
        shape("16 files x 64 KiB", 16, 64 << 10)
finally:
    shutil.rmtree(DIR, ignore_errors=True)
