"""Forked children (``nlp.pipe(texts, n_process=N)``) run torch on one thread.

The OpenMP thread pool behind torch's CPU ops does not survive ``fork``: once the parent has run a
parallel op, a child's first one waits forever for pool threads that were not copied. A child set
to one intra-op thread runs its ops inline, and N children then share the cores, one each.
"""

import os

import torch


def _one_thread_in_child() -> None:
    torch.set_num_threads(1)


os.register_at_fork(after_in_child=_one_thread_in_child)
