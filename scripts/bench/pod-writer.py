#!/usr/bin/env python3
# A pod's workload for restart tests and scripts/bench-restart.sh:
#   pod-writer.py block|files PATH JOURNAL STOPFILE
# writes a verifiable pattern through a volume (block: O_DIRECT 4-64 KiB writes on the device,
# fsync every 8; files: 4-128 KiB files fsynced and renamed into place), reads back each write,
# and journals completed writes (W/E), fsyncs (F), errors (ERR) and every I/O that waited more
# than 50 ms (L seconds). When STOPFILE appears it checks everything once more (V ok|bad).
import mmap, os, random, struct, sys, time

mode, path, journal_path, stop_path = sys.argv[1:5]
journal = open(journal_path, "a", buffering=1)
rng = random.Random(os.getpid())
BLOCK = 4096

def pattern(seq, block, count):
    words = struct.pack("<QQ", seq, block) * (count // 16)
    return words

def timed(what, function, *arguments):
    """Runs one I/O call; returns (succeeded, result) and journals errors and long waits."""
    start = time.monotonic()
    try:
        return True, function(*arguments)
    except OSError as error:
        journal.write("ERR %s errno %d %s\n" % (what, error.errno, error.strerror))
        return False, None
    finally:
        waited = time.monotonic() - start
        if waited > 0.05:
            journal.write("L %.4f\n" % waited)

def run_block():
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    size = os.lseek(fd, 0, os.SEEK_END)
    blocks = min(size // BLOCK, 4096)
    latest = {}
    buffer = mmap.mmap(-1, 16 * BLOCK)
    seq = 0
    while not os.path.exists(stop_path):
        seq += 1
        count = rng.randint(1, 16)
        first = rng.randrange(0, blocks - count)
        for index in range(count):
            buffer[index * BLOCK:(index + 1) * BLOCK] = pattern(seq, first + index, BLOCK)
        view = memoryview(buffer)[:count * BLOCK]
        ok, written = timed("pwrite", os.pwritev, fd, [view], first * BLOCK)
        if not ok:
            continue
        if written != count * BLOCK:
            journal.write("ERR short write %d of %d\n" % (written, count * BLOCK))
            continue
        for index in range(count):
            latest[first + index] = seq
        journal.write("W %d %d %d\n" % (seq, first, count))
        if seq % 8 == 0 and timed("fsync", os.fsync, fd)[0]:
            journal.write("F %d\n" % seq)
        ok, _ = timed("preadv", os.preadv, fd, [view], first * BLOCK)
        if ok:
            for index in range(count):
                if bytes(view[index * BLOCK:(index + 1) * BLOCK]) != pattern(seq, first + index, BLOCK):
                    journal.write("ERR read back block %d of write %d differs\n" % (first + index, seq))
    timed("fsync", os.fsync, fd)
    bad = 0
    one = memoryview(buffer)[:BLOCK]
    for block, seq in sorted(latest.items()):
        ok, _ = timed("final pread", os.preadv, fd, [one], block * BLOCK)
        if not ok or bytes(one) != pattern(seq, block, BLOCK):
            bad += 1
            journal.write("ERR final block %d is not write %d\n" % (block, seq))
    journal.write("V %s %d blocks\n" % ("ok" if bad == 0 else "bad", len(latest)))

def write_file(name, data):
    temporary = os.path.join(path, name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, os.path.join(path, name))
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

def read_file(name):
    with open(os.path.join(path, name), "rb") as handle:
        return handle.read()

def run_files():
    latest = {}
    seq = 0
    while not os.path.exists(stop_path):
        seq += 1
        name = "f%03d" % rng.randrange(0, 64)
        data = pattern(seq, 0, rng.randint(1, 32) * BLOCK)
        if not timed("write file", write_file, name, data)[0]:
            continue
        latest[name] = (seq, len(data))
        journal.write("E %d %s %d\n" % (seq, name, len(data)))
        ok, back = timed("read file", read_file, name)
        if ok and back != data:
            journal.write("ERR read back of %s (write %d) differs\n" % (name, seq))
    bad = 0
    for name, (seq, length) in sorted(latest.items()):
        ok, back = timed("final read", read_file, name)
        if not ok or back != pattern(seq, 0, length):
            bad += 1
            journal.write("ERR final %s is not write %d\n" % (name, seq))
    journal.write("V %s %d files\n" % ("ok" if bad == 0 else "bad", len(latest)))

run_block() if mode == "block" else run_files()
