"""An MMS batch of requests through one model's chain: one forward pass for their images.

MMS hands a worker up to ``batch_size`` requests at once. :class:`Batcher` answers them
with one outcome each (a :class:`~scorer.inference.chain.Response` or the exception that
request raised; the MMS handler maps both to MMS's context) and knows nothing of MMS:

* **decode** each request on its own (its own Content-Type and Accept; a 4xx is that
  request's alone). Single-image requests decode in parallel on the worker's
  :class:`~scorer.inference.image_pool.ImagePool`; a JSON batch decodes its images on it;
* **plan** (default chain): the requests whose input is an
  :class:`~scorer.inference.codecs.ImageBatch` are packed, in order, into forwards of at
  most :data:`MAX_FORWARD_IMAGES` images (a JSON batch of N images is N of them; a request
  is never split across two forwards); tensor requests (JSON/CSV/NPY arrays, whose shapes
  differ) run one by one;
* **merge** the packed requests' images, run ``predict_fn`` once on them, **split** the
  scores back by each request's slice, and encode per request with its own Accept and
  context (so custom attributes stay per request);
* **isolation**: if a shared forward fails, each of its requests runs alone, so each gets
  exactly the answer it would get alone: out of memory in a forward of several requests is
  retried one request at a time (memory freed first), and only a request that still does
  not fit answers 507; any other failure (one request's input the model cannot take) is
  likewise narrowed down to the requests that fail on their own.

A chain with the user's ``input_fn``/``predict_fn``/``output_fn``/``transform_fn`` runs
:meth:`~scorer.inference.chain.Chain.transform` per request, exactly as the AWS toolkit
does, unless the user's script opts in with ``batch_predict_fn(data_list, model,
contexts)``: then every decoded request's data goes to it in one call, and it returns one
prediction per item, in order (a failure is narrowed down by calling it on each item alone).

Each forward pass logs one JSON line at INFO (``{"event": "forward", "model",
"batch_requests", "batch_images", "kind"}``; MMS writes a worker's stdout to its log), and
:attr:`Batcher.last_forwards` keeps the latest batch's for tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import torch
from PIL import Image

from scorer.events import log_event
from scorer.inference import codecs
from scorer.inference.chain import Chain, Response, content_type_of
from scorer.inference.codecs import ImageBatch, Scores
from scorer.inference.context import RequestContext
from scorer.inference.defaults import MEMORY_ERRORS
from scorer.inference.images import EncodedJpeg

logger = logging.getLogger("scorer.batching")

MAX_FORWARD_IMAGES = codecs.MAX_JSON_IMAGES
"""Images in one forward pass at most: what one JSON request may already hold, so a batch
of requests never needs more memory than the largest single request the worker serves."""

Outcome: TypeAlias = Response | BaseException
"""One request's answer: its response, or the exception that ends it (mapped by the edge)."""


@dataclass(frozen=True)
class BatchRequest:
    """One request of an MMS batch: its body and context."""

    body: bytes
    context: RequestContext


@dataclass(frozen=True)
class ForwardThreads:
    """Torch threads for a forward pass, by what it holds: ``one_image`` for a pass of one
    image, ``batch`` for more images, a tensor request or the user's ``batch_predict_fn``.

    A small network's one-image pass can be faster and steadier on one thread while its
    batches still gain from all of them (measured: bench/README.md); the worker measures
    the one-image case at load (``serving.resources.choose_forward_threads``).
    """

    one_image: int
    batch: int

    def apply(self, images: int) -> None:
        """Set torch's thread count for a forward pass of ``images`` images (0: not images)."""
        wanted = self.one_image if images == 1 else self.batch
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)


@dataclass(frozen=True)
class Forward:
    """One forward pass: the requests (indexes in the batch) it served and its image count."""

    requests: tuple[int, ...]
    images: int
    kind: str  # "images" (stacked), "tensor" (one request), "user" (batch_predict_fn)


@dataclass
class _Decoded:
    """A request after ``input_fn``: where it is in the batch, its response type and data."""

    index: int
    context: RequestContext
    accept: str
    data: Any


# --- plan, merge, split (pure) --------------------------------------------------------------


def plan(sizes: Sequence[int], max_images: int = MAX_FORWARD_IMAGES) -> list[list[int]]:
    """Positions of ``sizes`` (images per request) packed, in order, into forwards of at most
    ``max_images`` images; a request larger than that gets a forward of its own."""
    groups: list[list[int]] = []
    total = 0
    for position, size in enumerate(sizes):
        if not groups or total + size > max_images:
            groups.append([])
            total = 0
        groups[-1].append(position)
        total += size
    return groups


def merge(batches: Sequence[ImageBatch]) -> tuple[ImageBatch, list[slice]]:
    """One batch of all the requests' images, and each request's slice of it."""
    if len(batches) == 1:
        return batches[0], [slice(0, len(batches[0].images))]
    images: list[Image.Image | EncodedJpeg] = []
    slices: list[slice] = []
    for batch in batches:
        slices.append(slice(len(images), len(images) + len(batch.images)))
        images.extend(batch.images)
    return ImageBatch(images, single=False), slices


def split(scores: Scores, slices: Sequence[slice]) -> list[Scores]:
    """Each request's rows of ``scores``, per its slice of the merged batch."""
    if not isinstance(scores, Scores):
        raise TypeError(f"predict_fn returned {type(scores).__name__} for images, not Scores")
    rows = sum(s.stop - s.start for s in slices)
    if scores.values.shape[0] != rows:
        raise ValueError(f"predict_fn returned {scores.values.shape[0]} rows for {rows} images")
    return [replace(scores, values=scores.values[s]) for s in slices]


# --- the batcher ----------------------------------------------------------------------------


class Batcher:
    """Runs MMS batches of requests through one chain; see the module's docstring."""

    def __init__(
        self,
        chain: Chain,
        *,
        max_images: int = MAX_FORWARD_IMAGES,
        log_format: str = "json",
        threads: ForwardThreads | None = None,
    ) -> None:
        self.chain = chain
        self.max_images = max_images
        self.log_format = log_format
        self.threads = threads  # None: torch's thread count is left as it is
        self.last_forwards: list[Forward] = []

    def run(self, requests: Sequence[BatchRequest]) -> list[Outcome]:
        """One outcome per request, in order; never raises for a request's failure."""
        self.last_forwards = []
        outcomes: list[Outcome | None] = [None] * len(requests)
        mode = self.chain.batching
        if mode == "none":
            if self.threads is not None:
                self.threads.apply(0)
            for index, request in enumerate(requests):
                outcomes[index] = _outcome(self.chain.transform, request.body, request.context)
            return _complete(outcomes)
        decoded = self._decode_all(requests, outcomes)
        if mode == "user":
            self._user_batch(decoded, outcomes)
            return _complete(outcomes)
        images = [d for d in decoded if isinstance(d.data, ImageBatch)]
        for group in plan([len(d.data.images) for d in images], self.max_images):
            self._forward_images([images[position] for position in group], outcomes)
        for item in decoded:
            if not isinstance(item.data, ImageBatch):
                self._forward_one(item, outcomes)
        return _complete(outcomes)

    # --- steps ------------------------------------------------------------------------------

    def _decode(self, index: int, request: BatchRequest) -> _Decoded | BaseException:
        try:
            accept = self.chain.accept_for(request.context)
            data = self.chain.decode(request.body, request.context)
        except Exception as exc:
            return exc
        return _Decoded(index, request.context, accept, data)

    def _decode_all(
        self, requests: Sequence[BatchRequest], outcomes: list[Outcome | None]
    ) -> list[_Decoded]:
        """Each request through ``input_fn``; a failure is that request's outcome.

        With the default ``input_fn``, requests that hold one bare image decode in parallel
        on the worker's image pool (the others use it inside, one request after another);
        a user's ``input_fn`` runs in this thread, one request after another."""
        indexed = list(enumerate(requests))
        parallel: list[tuple[int, BatchRequest]] = []
        if "input_fn" not in self.chain.user:
            parallel = [(i, r) for i, r in indexed if _one_bare_image(r.context)]
        done: dict[int, _Decoded | BaseException] = {}
        pool = self.chain.defaults.pool
        for (index, _), result in zip(
            parallel, pool.map_in_order(lambda item: self._decode(*item), parallel), strict=True
        ):
            done[index] = result
        decoded: list[_Decoded] = []
        for index, request in indexed:
            result = done[index] if index in done else self._decode(index, request)
            if isinstance(result, _Decoded):
                decoded.append(result)
            else:
                outcomes[index] = result
        return decoded

    def _record(self, items: Sequence[_Decoded], images: int, kind: str) -> None:
        """Log a forward pass about to run, and give it its torch threads."""
        if self.threads is not None:
            self.threads.apply(images)
        forward = Forward(tuple(item.index for item in items), images, kind)
        self.last_forwards.append(forward)
        log_event(
            logger, "forward", self.log_format, model=self.chain.defaults.model_name,
            batch_requests=len(items), batch_images=images, kind=kind,
        )  # fmt: skip

    def _respond(self, item: _Decoded, prediction: Any) -> Outcome:
        return _outcome(self.chain.respond, prediction, item.accept, item.context)

    def _forward_images(self, group: list[_Decoded], outcomes: list[Outcome | None]) -> None:
        """One forward pass for the images of ``group``; each request alone if it fails."""
        merged, slices = merge([item.data for item in group])
        self._record(group, len(merged.images), "images")
        try:
            prediction = self.chain.predict_fn(merged, self.chain.model)
            parts = [prediction] if len(group) == 1 else split(prediction, slices)
        except Exception as exc:
            if len(group) == 1:
                outcomes[group[0].index] = exc
                return
            failure = _Failure.of(exc)  # keeps no reference to the failed pass's tensors
        else:
            for item, part in zip(group, parts, strict=True):
                outcomes[item.index] = self._respond(item, part)
            return
        self._narrow(group, failure)
        for item in group:
            self._forward_images([item], outcomes)

    def _forward_one(self, item: _Decoded, outcomes: list[Outcome | None]) -> None:
        """A tensor request: its own forward pass, as one request alone."""
        self._record([item], 0, "tensor")
        try:
            prediction = self.chain.predict_fn(item.data, self.chain.model, context=item.context)
        except Exception as exc:
            outcomes[item.index] = exc
            return
        outcomes[item.index] = self._respond(item, prediction)

    def _user_batch(self, group: list[_Decoded], outcomes: list[Outcome | None]) -> None:
        """The user's ``batch_predict_fn`` on ``group``; each request alone if it fails."""
        if not group:
            return
        batch_predict = self.chain.batch_predict_fn
        assert batch_predict is not None
        self._record(group, 0, "user")
        try:
            predictions = list(
                batch_predict(
                    [item.data for item in group],
                    self.chain.model,
                    [item.context for item in group],
                )
            )
            if len(predictions) != len(group):
                raise ValueError(
                    f"batch_predict_fn returned {len(predictions)} predictions "
                    f"for {len(group)} inputs"
                )
        except Exception as exc:
            if len(group) == 1:
                outcomes[group[0].index] = exc
                return
            failure = _Failure.of(exc)
        else:
            for item, prediction in zip(group, predictions, strict=True):
                outcomes[item.index] = self._respond(item, prediction)
            return
        self._narrow(group, failure)
        for item in group:
            self._user_batch([item], outcomes)

    def _narrow(self, group: Sequence[_Decoded], failure: _Failure) -> None:
        """A shared forward failed: say so and, after running out of memory, free what the
        failed pass cached, before each request runs alone."""
        logger.warning(
            "model %s: a forward of %d requests failed (%s); running each request alone",
            self.chain.defaults.model_name,
            len(group),
            "out of memory" if failure.memory else failure.kind,
        )
        if failure.memory and self.chain.defaults.device.type == "cuda":
            torch.cuda.empty_cache()


@dataclass(frozen=True)
class _Failure:
    """What a failed shared forward was, without the exception: its traceback holds the
    failed pass's frames, and so its tensors, whose memory the retries need."""

    kind: str
    memory: bool

    @classmethod
    def of(cls, exc: Exception) -> _Failure:
        return cls(type(exc).__name__, isinstance(exc, MEMORY_ERRORS))


def _one_bare_image(context: RequestContext) -> bool:
    """Whether a request's default decoder reads one bare image (and uses no pool)."""
    return codecs.DECODERS.find(content_type_of(context)) is codecs.decode_raw_image


def _outcome(fn: Any, *args: Any) -> Outcome:
    try:
        result: Response = fn(*args)
    except Exception as exc:
        return exc
    return result


def _complete(outcomes: list[Outcome | None]) -> list[Outcome]:
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # a bug here, not the requests' fault: a server error for each
        return [
            RuntimeError("request left unanswered") if outcome is None else outcome
            for outcome in outcomes
        ]
    return [outcome for outcome in outcomes if outcome is not None]
