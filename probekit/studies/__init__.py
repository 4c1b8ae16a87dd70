"""Studies: the few calls each notebook makes, from a model and dataset ids to tidy tables.

Each module serves one notebook and holds every loop and summary that notebook needs, so the
notebooks stay a parameters cell plus calls and charts: :mod:`.shift` (01), :mod:`.probing`
(02 and 03), :mod:`.fusion` (04), :mod:`.summary` (05), :mod:`.finetune` (06). Studies are the
only orchestration layer: they load datasets, extract and measure, and every one reaches its
features through :mod:`probekit.pipeline` (``split_features`` for the splits of a dataset id,
``dataset_features`` for one loaded dataset), so all notebooks share one feature store per
(model, dataset, split). The libraries below them (``shift``, ``probes``, ``store``, ``sites``,
``extract``) never import a study or the dataset registry.
"""
