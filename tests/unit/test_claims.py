"""IPv4 block claims are atomic: a lock the kernel releases when the owner dies (no privileges:
the claims live in a temporary folder here)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

from harness import topology

WORKERS, ROUNDS, BLOCKS = 12, 60, 3


def _claimer(blocks_dir, held_dir, rounds, out):
    """Claim, mark the block as held with O_EXCL (a second holder would find the mark), release."""
    doubles = claims = 0
    i = 0
    while claims < rounds:
        i += 1
        try:
            block = topology.claim_block(i, blocks_dir=blocks_dir, n_blocks=BLOCKS)
        except topology.SetupError:
            os.sched_yield()             # every block is held right now: try again
            continue
        claims += 1
        mark = os.path.join(held_dir, str(block))
        try:
            os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.sched_yield()
            os.unlink(mark)
        except FileExistsError:
            doubles += 1
        topology.release_block(block, blocks_dir=blocks_dir)
    out.put((claims, doubles))


def _cleaner(blocks_dir, stop, out):
    """`socklab cleanup`'s part, in a loop: remove every claim file nobody holds."""
    removed = 0
    while not stop.is_set():
        for path in topology.stale_blocks(blocks_dir):
            removed += topology.remove_stale_block(path)
    out.put(removed)


def test_many_processes_few_blocks_and_cleanup_never_double_claim(tmp_path):
    blocks_dir, held_dir = str(tmp_path / "blocks"), str(tmp_path / "held")
    os.makedirs(held_dir)
    ctx = multiprocessing.get_context("fork")
    results, stop, cleaned = ctx.Queue(), ctx.Event(), ctx.Queue()
    cleaners = [ctx.Process(target=_cleaner, args=(blocks_dir, stop, cleaned)) for _ in range(2)]
    workers = [ctx.Process(target=_claimer, args=(blocks_dir, held_dir, ROUNDS, results)) for _ in range(WORKERS)]
    for p in cleaners + workers:
        p.start()
    got = [results.get(timeout=120) for _ in workers]
    stop.set()
    removed = sum(cleaned.get(timeout=30) for _ in cleaners)
    for p in cleaners + workers:
        p.join(30)
    claims, doubles = sum(c for c, _ in got), sum(d for _, d in got)
    assert doubles == 0, f"{doubles} double claims in {claims} claims ({removed} stale files removed meanwhile)"
    assert claims == WORKERS * ROUNDS
    assert os.listdir(blocks_dir) == [] or topology.stale_blocks(blocks_dir) == sorted(
        os.path.join(blocks_dir, e) for e in os.listdir(blocks_dir))


HOLDER = """
import sys
from harness import topology
print(topology.claim_block(0, blocks_dir=sys.argv[1], n_blocks=1), flush=True)
sys.stdin.read()
"""


def test_a_live_claim_is_kept_and_a_killed_owners_claim_is_taken_over(tmp_path):
    blocks_dir = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, blocks_dir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        path = os.path.join(blocks_dir, "0")
        with open(path, "w") as fh:
            fh.write("")                       # the content says nothing: an empty file is not a dead owner
        assert topology.stale_blocks(blocks_dir) == []
        assert topology.remove_stale_block(path) is False and os.path.exists(path)
        try:
            topology.claim_block(0, blocks_dir=blocks_dir, n_blocks=1)
            raise AssertionError("claimed a block a live process holds")
        except topology.SetupError as exc:
            assert "claimed by running processes" in str(exc)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert topology.stale_blocks(blocks_dir) == [path]
        assert topology.claim_block(0, blocks_dir=blocks_dir, n_blocks=1) == 0
        assert topology.stale_blocks(blocks_dir) == []
        topology.release_block(0, blocks_dir=blocks_dir)
        assert not os.path.exists(path)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        holder.stdin.close()
