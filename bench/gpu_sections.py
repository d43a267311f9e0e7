"""The GPU check's in-process sections: placement, decode, precision, batching, the
in-process limit, memory over load/unload cycles, and a real out-of-memory through the handler.

Each takes the run's :class:`~bench.gpu_workbench.Workbench` and returns a
:class:`~bench.gpu_workbench.Check`; :mod:`bench.gpu_check` runs them in order.
"""

from __future__ import annotations

import functools
import gc
import os
from typing import Any

import torch

from bench import device_memory, oversize
from bench.gpu_workbench import Check, Workbench, forward, median_ms
from bench.load import in_process
from scorer import config as cfg
from scorer.errors import BadRequestError, ConfigError
from scorer.inference.batching import Batcher, BatchRequest
from scorer.inference.chain import Chain, Response
from scorer.inference.context import RequestContext
from scorer.inference.defaults import CreativeScoringDefaults
from scorer.inference.device_images import decode_jpegs, preprocess_on_device
from scorer.inference.device_images import to_device as host_to_device
from scorer.inference.images import (
    EncodedJpeg,
    decode_image,
    decode_target,
    preprocess_images,
    read_image,
)
from scorer.models.loading import LoadedModel
from scorer.modelserver.gpu import total_gpu_memory
from scorer.serving.handler_service import HandlerService
from scorer.serving.resources import most_free_gpu, select_device

GROWTH_TARGET_PERCENT = 5.0  # device memory over N load/unload cycles, at most


def check_placement(bench: Workbench) -> Check:
    """Device selection, most-free placement, and several models sharing the device."""
    s = bench.s
    check = Check("placement", s.on)
    cuda = torch.cuda.is_available()
    check.figures.update(cuda_available=cuda, device_count=torch.cuda.device_count())
    auto = select_device("cpu" if s.dry_run else "auto", None, "most-free")
    check.figures["selected"] = str(auto)
    check.require(auto == s.device, "select_device", f"{auto}")
    if cuda:
        check.figures["gpus"] = [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "total_mib": torch.cuda.get_device_properties(i).total_memory >> 20,
            }
            for i in range(torch.cuda.device_count())
        ]
        check.figures["most_free_gpu"] = most_free_gpu()
        mms_choice = select_device("cuda", 3, "mms")
        check.require(
            mms_choice.index == 3 % torch.cuda.device_count(),
            "placement mms, gpu_id 3",
            str(mms_choice),
        )
        total = total_gpu_memory()
        check.figures["nvidia_smi_total_mib"] = None if total is None else total >> 20
        check.require(total is not None, "nvidia-smi total memory", f"{total and total >> 20} MiB")
    else:
        try:
            select_device("cuda", None)
        except ConfigError as exc:
            check.figures["cuda_without_gpu"] = exc.message
            check.require(True, "SCORER_DEVICE=cuda without CUDA", "ConfigError")
        else:
            check.require(False, "SCORER_DEVICE=cuda without CUDA", "no error")
    placed = {}
    for backbone in s.models:
        model = bench.load(backbone)
        placed[backbone] = str(next(model.network.parameters()).device)
    check.figures["models_on"] = placed
    same = all(device == str(s.device) for device in placed.values())
    check.require(same, f"{len(placed)} models share", ", ".join(sorted(set(placed.values()))))
    return check


def check_decode(bench: Workbench) -> Check:
    """nvJPEG (one call per batch) against PIL with draft: time, input and score differences."""
    s = bench.s
    note = "" if s.device.type == "cuda" else "torchvision's CPU decoder stands in for nvJPEG"
    check = Check("decode", s.on, note=note)
    spec = bench.spec
    target = decode_target(spec)
    jpegs = bench.jpegs
    chosen = CreativeScoringDefaults(s.device, allow_pickle=False, model_name="check").decoding
    check.figures["worker_choice"] = chosen
    check.require(
        chosen == ("device" if s.device.type == "cuda" else "pil"), "worker's choice", chosen
    )

    def pil_path() -> torch.Tensor:
        images = [decode_image(data, target) for data in jpegs]
        return host_to_device(preprocess_images(images, spec), s.device)

    def device_path() -> torch.Tensor:
        kept = [read_image(data, target) for data in jpegs]
        return preprocess_on_device(kept, spec, s.device)

    encoded = [EncodedJpeg(data, (0, 0), (s.image_side, s.image_side)) for data in jpegs]
    count = len(jpegs)
    figures = {
        "images": count,
        "image_side": s.image_side,
        "pil_decode_ms_per_image": median_ms(
            lambda: [decode_image(d, target) for d in jpegs], s.device, s.reps
        )
        / count,
        "device_decode_ms_per_image": median_ms(
            lambda: decode_jpegs(encoded, s.device), s.device, s.reps
        )
        / count,
        "pil_path_ms_per_image": median_ms(pil_path, s.device, s.reps) / count,
        "device_path_ms_per_image": median_ms(device_path, s.device, s.reps) / count,
    }
    pil, dev = pil_path(), device_path()
    figures["input_max_abs_diff"] = float((pil - dev).abs().max())
    figures["input_mean_abs_diff"] = float((pil - dev).abs().mean())
    model = bench.load(s.models[0])
    scores_pil, scores_dev = forward(model, pil), forward(model, dev)
    figures["score_max_abs_diff"] = float((scores_pil - scores_dev).abs().max())
    check.figures.update(
        {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    )
    check.row("PIL decode (draft), ms/img", figures["pil_decode_ms_per_image"])
    check.row("device decode, ms/img", figures["device_decode_ms_per_image"])
    check.row("PIL path to device batch, ms/img", figures["pil_path_ms_per_image"])
    check.row("device path to device batch, ms/img", figures["device_path_ms_per_image"])
    check.require(
        figures["input_mean_abs_diff"] < 0.1,
        "inputs, mean abs diff",
        figures["input_mean_abs_diff"],
    )
    check.require(
        figures["score_max_abs_diff"] < 0.05,
        f"{s.models[0]} scores, max abs diff",
        figures["score_max_abs_diff"],
    )
    truncated = jpegs[0][: len(jpegs[0]) // 2]  # as if its header had been read: the device
    passed = EncodedJpeg(truncated, (0, 0), (s.image_side, s.image_side))  # decoder sees it
    try:
        preprocess_on_device([read_image(jpegs[1]), passed], spec, s.device)
    except BadRequestError as exc:
        refused = exc.message
    else:
        refused = "decoded without an error"
    check.figures["truncated_jpeg"] = refused
    check.require(refused.startswith("corrupt or truncated"), "a truncated JPEG is a 400", refused)
    return check


def check_precision(bench: Workbench) -> Check:
    """Half-precision scores against float32, and forward time per image."""
    s = bench.s
    check = Check("precision", s.on)
    spec = bench.spec
    target = decode_target(spec)
    batch = max(size for size in s.batch_sizes if size <= 32)
    images = [decode_image(data, target) for data in bench.jpeg_batch(batch)]
    host = preprocess_images(images, spec)
    device_batch = host_to_device(host, s.device)
    results: dict[str, Any] = {}
    for backbone in s.models:
        reference = bench.load(backbone)
        want = forward(reference, device_batch)
        reference_ms = median_ms(
            functools.partial(forward, reference, device_batch), s.device, s.reps
        )
        per_model: dict[str, Any] = {"float32_ms_per_image": round(reference_ms / batch, 4)}
        for dtype in s.dtypes:
            try:
                model = bench.load(backbone, dtype)
                got = forward(model, device_batch)
                run = functools.partial(forward, model, device_batch)
                ms = median_ms(run, s.device, s.reps) / batch
            except RuntimeError as exc:  # a dtype this device cannot run (e.g. on a CPU)
                per_model[dtype] = {"error": str(exc).splitlines()[0][:200]}
                check.row(f"{backbone} {dtype}", "not supported here", "n/a")
                continue
            diff = float((got - want).abs().max())
            per_model[dtype] = {"max_abs_diff": round(diff, 5), "ms_per_image": round(ms, 4)}
            check.row(f"{backbone} {dtype}: max abs diff / ms per image", f"{diff:.3g} / {ms:.3g}")
            if diff != diff:  # NaN: this precision breaks the model
                check.require(False, f"{backbone} {dtype} finite scores", "NaN")
        results[backbone] = per_model
    check.figures.update(batch=batch, models=results)
    return check


def check_batching(bench: Workbench) -> Check:
    """Throughput per batch size (pinned host memory, non-blocking copies) and the best one."""
    s = bench.s
    check = Check("batching", s.on, note=f"forward in {s.half}")
    size = s.input_size
    results: dict[str, Any] = {}
    for backbone in s.models:
        model = bench.load(backbone, s.half)
        per_batch: dict[str, float] = {}
        for batch in s.batch_sizes:
            host = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

            def step(h: torch.Tensor = host, m: LoadedModel = model) -> torch.Tensor:
                return forward(m, host_to_device(h, s.device)).cpu()

            ms = median_ms(step, s.device, s.reps)
            per_batch[str(batch)] = round(batch * 1000 / ms, 1)
        best = int(max(per_batch, key=per_batch.__getitem__))
        bench.best_batch[backbone] = best
        results[backbone] = {"images_per_s": per_batch, "best_batch": best}
        check.row(
            f"{backbone} img/s by batch",
            ", ".join(f"{b}: {v:.0f}" for b, v in per_batch.items()),
            f"best {best}",
        )
    largest = max(s.batch_sizes)
    host = torch.randn(largest, 3, size, size).contiguous(memory_format=torch.channels_last)
    copies: dict[str, float | str]
    if s.device.type == "cuda":
        pinned = host.pin_memory()
        copies = {
            "pageable_ms": median_ms(lambda: host.to(s.device), s.device, s.reps),
            "pinned_non_blocking_ms": median_ms(
                lambda: pinned.to(s.device, non_blocking=True), s.device, s.reps
            ),
        }
        check.row(
            f"copy of {largest} images: pageable / pinned ms",
            f"{copies['pageable_ms']:.3g} / {copies['pinned_non_blocking_ms']:.3g}",
        )
    else:
        copies = {"note": "none: no host-to-device copy on the CPU"}
    check.figures.update(models=results, copy=copies)
    return check


def check_limit(bench: Workbench) -> Check:
    """The in-process GPU limit: the worker's own path (device decode, one batched forward
    in half precision, JSON encoding) at the best batch size, no server."""
    s = bench.s
    check = Check("limit", s.on, note=f"device decode + {s.half} forward, no server")
    results: dict[str, Any] = {}
    for backbone in s.models:
        model_dir = bench.served_dirs[backbone]
        defaults = CreativeScoringDefaults(
            s.device, allow_pickle=False, model_name=backbone, decoding="device"
        )
        chain = Chain.for_model_dir(model_dir, defaults)
        chain.load(model_dir)
        batch = bench.best_batch.get(backbone, max(s.batch_sizes))
        batcher = Batcher(chain, max_images=batch)
        context = RequestContext(
            model_name=backbone, content_type="image/jpeg", accept="application/json"
        )
        requests = [BatchRequest(body, context) for body in bench.jpeg_batch(batch)]

        def once(b: Batcher = batcher, r: list[BatchRequest] = requests) -> object:
            return b.run(r)

        measurement = in_process(f"limit:{backbone}", once, s.duration_s, s.warmup_s, batch)
        outcomes = batcher.run(requests)
        answered = sum(isinstance(outcome, Response) for outcome in outcomes)
        forwards = [forward.images for forward in batcher.last_forwards]
        bench.limit[backbone] = measurement
        results[backbone] = {
            "batch": batch,
            "dtype": str(chain.model.dtype).removeprefix("torch."),
            "forwards": forwards,
            **measurement.to_dict(),
        }
        check.require(
            answered == batch and forwards == [batch],
            f"{backbone}: {batch} requests answered, in forwards of",
            forwards,
        )
        check.row(
            f"{backbone} batch {batch}: img/s, p50/p99 ms",
            f"{measurement.images_per_s:.1f}, {measurement.p50_ms:.1f}/{measurement.p99_ms:.1f}",
        )
    check.figures["models"] = results
    return check


def _load_and_unload(bench: Workbench, backbone: str) -> None:
    """Load the model, run one forward pass, drop it and return the cached blocks."""
    model = bench.load(backbone)
    with torch.inference_mode():
        model(torch.zeros(1, 3, bench.s.input_size, bench.s.input_size, device=bench.s.device))
    del model
    gc.collect()
    if bench.s.device.type == "cuda":
        torch.cuda.empty_cache()


def check_memory(bench: Workbench) -> Check:
    """Device memory before a load, after it and after the unload, over N cycles."""
    s = bench.s
    backbone = s.models[0]
    check = Check("memory", s.on, note=f"{backbone}, {s.cycles} in-process load/unload cycles")
    cold = device_memory.read(s.device)
    # one cycle first: the CUDA context and cuBLAS/cuDNN workspaces stay, the model's not
    _load_and_unload(bench, backbone)
    before = device_memory.read(s.device)
    loads, unloads = [], []
    for _ in range(s.cycles):
        model = bench.load(backbone)
        with torch.inference_mode():
            model(torch.zeros(1, 3, s.input_size, s.input_size, device=s.device))
        loads.append(device_memory.read(s.device))
        del model
        gc.collect()
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
        unloads.append(device_memory.read(s.device))
    key = before.key
    growth = device_memory.growth_percent(loads[0].value(), loads[-1].value())
    check.figures.update(
        measure=key,
        cycles=s.cycles,
        before_warm_up=cold.to_dict(),
        before=before.to_dict(),
        after_first_load=loads[0].to_dict(),
        after_first_unload=unloads[0].to_dict(),
        after_last_load=loads[-1].to_dict(),
        after_last_unload=unloads[-1].to_dict(),
        growth_percent=growth,
    )
    check.row(
        f"{key} before / after load / after unload, MiB",
        f"{before.value() >> 20} / {loads[0].value() >> 20} / {unloads[0].value() >> 20}",
    )
    if s.device.type == "cuda":
        check.require(
            growth <= GROWTH_TARGET_PERCENT,
            f"allocated growth over {s.cycles} cycles",
            f"{growth}%",
        )
        back = unloads[-1].value() - before.value()
        check.require(back <= 1 << 20, "allocated after the last unload - before", f"{back} B")
        used = [r.device_used for r in (before, loads[0], unloads[-1])]
        check.row(
            "nvidia-smi used before / after load / after last unload, MiB",
            " / ".join("?" if u is None else str(u >> 20) for u in used),
        )
        first_used, last_used = loads[0].device_used, loads[-1].device_used
        if first_used is not None and last_used is not None:
            used_growth = device_memory.growth_percent(first_used, last_used)
            check.figures["nvidia_smi_growth_percent"] = used_growth
            check.require(
                used_growth <= GROWTH_TARGET_PERCENT,
                f"nvidia-smi used growth over {s.cycles} cycles",
                f"{used_growth}%",
            )
    else:
        check.target(
            growth <= GROWTH_TARGET_PERCENT,
            f"rss growth over {s.cycles} cycles",
            f"{growth}%",
            "<= 5 % on the device",
        )
    return check


def _mms_call(service: HandlerService, requests: list[tuple[bytes, str]]) -> list[int]:
    """One MMS batch through MMS's own request decoding and ``Context``, then the handler;
    the status of each request."""
    batch = [
        {
            "requestId": f"gpu-check-{i}".encode(),
            "parameters": [{"name": "body", "contentType": ctype, "value": body}],
            "headers": [{"name": b"accept", "value": b"application/json"}],
        }
        for i, (body, ctype) in enumerate(requests)
    ]
    import mms  # type: ignore[import-untyped]  # MMS's Python side: carried where not installed
    from mms.context import Context  # type: ignore[import-untyped]
    from mms.service import Service  # type: ignore[import-untyped]

    processors, data, ids = Service.retrieve_data_for_inference(batch)
    context = Context(
        service.model_name, str(service.model_dir), None, len(batch), None, mms.__version__
    )
    context.request_ids = ids
    context.request_processor = processors
    service.handle(data, context)
    return [int(context.get_response_status(i)[0] or 200) for i in range(len(batch))]


def check_oom(bench: Workbench) -> Check:
    """A real oversize allocation in a forward pass through the real handler: 507, then 200."""
    s = bench.s
    check = Check("oom", s.on, note="HandlerService in this process, MMS's request decoding")
    name = "oversize-inprocess"
    model_dir = oversize.build_model_dir(s.models[-1], name, bench.models_root, size=s.input_size)
    environ = {
        cfg.DEVICE: s.device.type,
        cfg.RUN_DIR: str(bench.workdir / "run-oom"),
        cfg.WORKER_MEMORY_LIMIT_MB: "off",  # RLIMIT_DATA would bind this whole process
        cfg.MODELS_ROOT: str(bench.models_root),
    }
    os.environ[oversize.DEVICE_VARIABLE] = str(s.device)
    service = HandlerService(cfg.load_config(environ), name, model_dir, None)
    service.initialize()
    image = (bench.jpegs[0], "image/jpeg")
    trigger = (oversize.trigger_body(s.input_size), "application/x-npy")
    before = device_memory.read(s.device)
    sequence = [_mms_call(service, [request])[0] for request in (image, trigger, image)]
    together = _mms_call(service, [image, trigger, image])
    after = device_memory.read(s.device)
    check.figures.update(
        alone=sequence,
        batch_of_three=together,
        memory_before=before.to_dict(),
        memory_after=after.to_dict(),
    )
    check.require(sequence == [200, 507, 200], "image, oversize, image", sequence)
    check.require(together == [200, 507, 200], "one batch of the same three", together)
    if s.device.type == "cuda":
        grown = (after.value() - before.value()) >> 20  # workspaces of new batch sizes aside
        check.require(grown <= 64, "allocated after the 507s - before, MiB", grown)
    return check
