"""Prometheus metrics, per model, in every mode (``GET /metrics``; docs/observability.md).

* :mod:`~scorer.metrics.worker`: what a model worker counts and times (requests, stages,
  forward batch sizes, loads, resident memory), written to its own files under the
  server's ``metrics_dir`` (prometheus_client's multiprocess mode);
* :mod:`~scorer.metrics.multiprocess`: those files summed across workers, dead ones
  included (their counters stay; their live gauges go);
* :mod:`~scorer.metrics.cache`: the model cache's counters, read from its stats per scrape;
* :mod:`~scorer.metrics.exposition`: a registry as Prometheus text (content negotiation);
* :mod:`~scorer.metrics.server`: the supervisor's loopback HTTP server that MMS's
  ``/metrics`` plugin (``ai.scorer.mms.Metrics``) reads in the MMS modes;
* :mod:`~scorer.metrics.emf`: the same figures as CloudWatch EMF lines on stdout, per
  interval (``SCORER_EMF``).

This layer imports only ``config``/``errors`` of scorer (and prometheus_client, psutil):
``inference`` never imports it; the MMS handler times the chain's stages from outside.
"""
