"""The layer under both front ends: Multi Model Server and what scorer adds around it.

* :mod:`~scorer.modelserver.properties` and :mod:`~scorer.modelserver.process`: MMS's
  configuration derived from a :class:`~scorer.config.ServerConfig`, and its process
  (start, readiness, drain and stop, restart with the models restored);
* :mod:`~scorer.modelserver.start`: one way to start it behind a front end;
* :mod:`~scorer.modelserver.zygote` and :mod:`~scorer.modelserver.launcher`: model workers
  forked from a pre-warmed process;
* :mod:`~scorer.modelserver.client`: the one client for MMS's management and inference APIs;
  :mod:`~scorer.modelserver.registry`: the cache's model registry over it;
* :mod:`~scorer.modelserver.inflight`, :mod:`~scorer.modelserver.load_failures`,
  :mod:`~scorer.modelserver.janitor`: what workers record for the supervisor and ``/ping``;
* :mod:`~scorer.modelserver.workers`, :mod:`~scorer.modelserver.gpu`: the memory a model's
  worker processes use on the host and on GPUs; :mod:`~scorer.modelserver.ports`.

Nothing here imports a front end (``serving``, ``local``) or the model cache.
"""
