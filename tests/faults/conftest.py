"""Fault-injection fixtures: a forkserver whose children already imported the retrievers."""

from __future__ import annotations

import multiprocessing

import pytest


@pytest.fixture(scope="session")
def fork_ctx():
    """A ``multiprocessing`` forkserver context preloaded with the retrievers (and torch,
    which they import through the package): each child then starts in milliseconds."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vllm_pool.retrievers.dense", "vllm_pool.retrievers.multivector"])
    return ctx
