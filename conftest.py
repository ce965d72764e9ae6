"""Doctest collection over ``src``: skip the modules whose optional dependency is not installed."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob.append("src/dropkit/torch/*")
if importlib.util.find_spec("triton") is None:
    collect_ignore_glob.append("src/dropkit/torch/_triton.py")
if importlib.util.find_spec("numba") is None:
    collect_ignore_glob.append("src/dropkit/kernels/cpu.py")
