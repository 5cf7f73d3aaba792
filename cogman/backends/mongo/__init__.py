"""The MongoDB task log: the backend (backend.py) with conditional updates on the status rank, its
indexes and early statuses (schema.py), and helpers for queries, workers and workflows, each taking the
collections it needs (never the backend class).

May import ``cogman.backends`` base modules and the shared vocabulary only.
"""
