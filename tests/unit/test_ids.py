"""Task ids and start tokens from a pool of OS randomness (cogman/sending/ids.py)."""

from __future__ import annotations

import os
import uuid

from cogman.sending import ids


def test_ids_are_distinct_version_4_uuids_across_several_pool_refills():
    made = [ids.new_task_id() for _ in range(ids.POOL_IDS * 3 + 1)]
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(made_id).version == 4 and str(uuid.UUID(made_id)) == made_id for made_id in made)
    token = ids.new_token()
    assert len(token) == 32 and uuid.UUID(hex=token).version == 4


def test_a_forked_child_never_repeats_its_parents_next_id():
    ids.new_task_id()  # the pool holds bytes the child would share without its reset
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's side
        os.write(write, ids.new_task_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    childs = os.read(read, 64).decode()
    os.close(read)
    assert uuid.UUID(childs).version == 4 and childs != ids.new_task_id()
