"""Studies: the few calls each notebook makes, from a model and dataset ids to tidy tables.

Each module serves one notebook and holds every loop and summary that notebook needs, so the
notebooks stay a parameters cell plus calls and charts: :mod:`.shift` (01), :mod:`.probing`
(02 and 03), :mod:`.fusion` (04), :mod:`.summary` (05). Features come through
:mod:`probekit.pipeline`, so all notebooks share one feature store per (model, dataset, split).
"""
