"""Secure inference of a config's model with three local parties, and its report.

:func:`secure_inference` compiles the model (:mod:`.compiler`), starts the
client, server and helper as separate processes talking mutual TLS over
127.0.0.1 (:class:`.launch.LocalCluster`), runs every batch as an offline and
an online pass, and compares the client's predictions with the plaintext
model's. Bytes come from the parties' meters (the transport is the one place
that counts them) and are reported per party, direction, phase and layer,
next to the cost model's prediction (:mod:`.costmodel`).

:func:`run_party` is what each party process runs; ``tools/mpc_party.py``
runs the same function on separate machines.
"""
import os
import time
from collections import OrderedDict, defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from . import cost as _cost
from .compiler import SecureProgram, compile_model
from .costmodel import session_costs
from .transport import Record

__all__ = ['secure_inference', 'run_party', 'measured_costs', 'plaintext_logits',
           'load_test_inputs', 'segmentation_miou']

ROLES = ('client', 'server', 'helper')


# ----------------------------------------------------------------- party side
def run_party(sess, program: SecureProgram, batches: Sequence,
              num_threads: Optional[int] = None, progress: bool = False) -> Dict[str, Any]:
    """Run ``program`` on every batch in this party: offline pass, then online.

    Args:
        sess: The party's session.
        program: The program: with weights at the server,
            :meth:`SecureProgram.public` elsewhere. The local launcher hands it
            to its own party processes over a multiprocessing pipe; parties on
            other machines build theirs from the config (``tools/mpc_party.py``).
        batches: The client's float input batches ``(N, C, H, W)``; at the
            other parties their shapes.
        num_threads: torch threads for this party (default: unchanged).
        progress: Write images done / total to stderr after every batch
            (:class:`..utils.cli.Progress`).

    Returns:
        dict: ``logits`` (client: float64 logits per batch, else None),
        ``times`` (offline and online seconds per batch), ``records`` (the
        meter records of each batch) and ``handshake`` (the records before
        the first batch: the session key agreement, on a fresh session).
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    # No message of the program is larger than its layer's bytes in one direction, so a
    # peer's frame header claiming more is refused before anything is allocated. (The
    # connections outlive the run: the limit is this program's only while it runs.)
    limit = max_message_bytes(program, [tuple(b.shape) if isinstance(b, Tensor) else tuple(b)
                                        for b in batches])
    for conn in sess.conns.values():
        conn.max_frame = min(conn.max_frame_cap, limit)
    try:
        # unlabelled messages are the session key agreement (every protocol call is labelled)
        handshake = [r for r in sess.meter.since(0) if r.label == '']
        out: Dict[str, Any] = {'logits': [], 'times': [], 'records': [],
                               'handshake': [tuple(r) for r in handshake]}
        sizes = [int(b.shape[0] if isinstance(b, Tensor) else b[0]) for b in batches]
        bar = None
        if progress:
            from ..utils.cli import Progress
            bar = Progress(sum(sizes), f'{sess.role}: secure inference')
            bar.update(0)
        for i, batch in enumerate(batches):
            shape = tuple(batch.shape) if isinstance(batch, Tensor) else tuple(batch)
            mark = sess.meter.mark()
            t0 = time.perf_counter()
            with sess.offline():
                program(sess, shape)
            t1 = time.perf_counter()
            with sess.online():
                logits = program(sess, batch if sess.role == 'client' else shape)
            t2 = time.perf_counter()
            out['logits'].append(logits)
            out['times'].append((t1 - t0, t2 - t1))
            out['records'].append([tuple(r) for r in sess.meter.since(mark)])
            if bar is not None:
                bar.update(sum(sizes[:i + 1]))
    finally:
        for conn in sess.conns.values():
            conn.max_frame = conn.max_frame_cap
    return out


def max_message_bytes(program: SecureProgram, shapes: Sequence[tuple]) -> int:
    """An upper bound on any one message of ``program`` on these batch shapes: the
    largest per-layer byte count of one (phase, sender, receiver) in the cost model."""
    from .costmodel import program_costs
    most = 0
    for shape in set(shapes):
        for c in program_costs(program, shape).layers.values():
            most = max([most] + list(c.parts.values()))
    return most


def measured_costs(records_by_role: Dict[str, Iterable[tuple]]) -> Dict[str, _cost.Cost]:
    """Meter records of the three parties as ``{layer label: Cost}``.

    Only ``send`` records are used (each message once, at its sender); the
    key agreement (label ``''``) is reported as ``'handshake'``.
    """
    layers: Dict[str, Dict[tuple, int]] = OrderedDict()
    for role, records in records_by_role.items():
        for rec in records:
            r = Record(*rec)
            if r.direction != 'send':
                continue
            label = r.label or 'handshake'
            parts = layers.setdefault(label, defaultdict(int))
            parts[(r.phase, role, r.peer)] += r.nbytes
    return OrderedDict((k, _cost.Cost(v)) for k, v in layers.items())


# ----------------------------------------------------------------- client side
def plaintext_logits(model: nn.Module, images: Tensor, batch_size: int = 8) -> Tensor:
    """The float model's logits (``mode='tensor'``; auxiliary heads unused)."""
    from ..conversion.sites import run_tensor_forward
    model = model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            outs.append(run_tensor_forward(model, images[i:i + batch_size].float()).double())
    return torch.cat(outs)


def segmentation_miou(preds: Sequence[Tensor], labels: Sequence[Tensor], num_classes: int,
                      ignore_index: int = 255) -> float:
    """Mean IoU over the classes that occur (prediction or label) in the set, in %."""
    inter = torch.zeros(num_classes, dtype=torch.float64)
    union = torch.zeros(num_classes, dtype=torch.float64)
    for p, t in zip(preds, labels):
        p, t = p.reshape(-1).long(), t.reshape(-1).long()
        keep = t != ignore_index
        p, t = p[keep], t[keep]
        inter += torch.bincount(t[p == t], minlength=num_classes)[:num_classes].double()
        area_p = torch.bincount(p, minlength=num_classes)[:num_classes].double()
        area_t = torch.bincount(t, minlength=num_classes)[:num_classes].double()
        union += area_p + area_t
    union -= inter
    valid = union > 0
    return float((inter[valid] / union[valid]).mean() * 100) if valid.any() else float('nan')


def _batches(images: Tensor, batch_size: int) -> List[Tensor]:
    return [images[i:i + batch_size].float().contiguous()
            for i in range(0, images.shape[0], batch_size)]


def _predict(program: SecureProgram, logits: Tensor, sizes) -> List[Tensor]:
    return [program.postprocess(logits[i:i + 1], size)[0] for i, size in enumerate(sizes)]


def secure_inference(config, checkpoint: Optional[str] = None, spec: Optional[str] = None,
                     images: Optional[Tensor] = None, labels: Optional[Sequence] = None, *,
                     bits: int = 64, shift: Optional[int] = None, relu_bits: int = 64,
                     pool_bits: int = 64, batch_size: int = 1, frac_bits: int = 12,
                     pool_before_relu: bool = False, cluster=None, timeout: float = 600.0,
                     party_threads: int = 1, test_indices: Optional[Sequence[int]] = None,
                     test_set_metric: Optional[float] = None,
                     calibration_images: Optional[Tensor] = None,
                     margin: float = 4.0, progress: bool = False) -> Dict[str, Any]:
    """Run the config's model under 3-party secure inference on ``images``.

    Args:
        config: Config path or Config (built with ``spec`` and ``checkpoint``),
            or an already built float model.
        checkpoint: Weights (loaded by the server's program only; the client
            and helper get shapes).
        spec: Block-ReLU spec file replacing the config's.
        images: Float model inputs ``(N, C, H, W)``, i.e. after the model's
            data preprocessor (see :func:`load_test_inputs`).
        labels: Optional class indices ``(N,)`` (classification) or label
            maps (segmentation, one ``(H, W)`` per image: predictions are
            made at the label's size).
        bits, shift: Compared bits / pre-shift of Block-ReLU sites' DReLUs.
        relu_bits, pool_bits: Compared bits of plain ReLU and MaxPool sites.
        batch_size: Images per protocol run.
        frac_bits: Fixed-point fractional bits.
        pool_before_relu: See :func:`.compiler.compile_model`.
        cluster: A running :class:`.launch.LocalCluster` to reuse (default:
            a fresh one, closed afterwards).
        timeout: Seconds to wait for the parties.
        party_threads: torch threads per party process.
        test_indices: The test dataset indices of ``images`` (as given to
            :func:`load_test_inputs`): the plaintext model's metric on the
            same images is then also computed through the config's ordinary
            test path (:func:`..utils.stock_test.stock_test`). Needs
            ``config`` as a config, with ``labels``.
        test_set_metric: The model's metric on the whole test set, if known
            (reported beside the others).
        calibration_images: Training inputs (after the data preprocessor,
            e.g. from :func:`..budget.distortion.load_samples`) from which
            the per-site shifts of approximate DReLUs (any ``*bits`` < 64
            without an explicit shift) are chosen
            (:func:`.calibrate.measure_ranges`).
        margin: Compared range over calibrated range required per site
            (:func:`.calibrate.choose_shift`).
        progress: The client party writes images done / total to stderr
            after every batch (:func:`run_party`).

    Returns:
        dict with ``predictions`` / ``plain_predictions`` (per image),
        ``logits`` / ``plain_logits``, ``agreement`` (fraction of equal
        predictions; pixels for segmentation), ``max_logit_error``,
        ``accuracy`` / ``plain_accuracy`` or ``miou`` / ``plain_miou`` (with
        labels), ``metric`` (with labels: ``name`` (``accuracy/top1`` or
        ``mIoU``), ``secure``, ``plaintext`` (the float model on the same
        input tensor), ``stock`` (the config's test path on the same images,
        with ``test_indices``) and ``test_set``), ``bytes`` (measured: per
        phase, per (phase, src, dst), per party; ``handshake`` and
        ``weights``, the two parts of ``session``; plus ``per_image`` with
        ``online_offline``), ``calibration`` (per-site rows of
        :meth:`.compiler.SecureProgram.calibration_report`, or None) and
        ``margin``, ``predicted`` (the cost model's
        ``ours`` for the same runs) and ``predicted_equal``, ``layers``
        (measured bytes per layer label), ``rounds`` (cost model, online,
        per run), ``time`` (client seconds per image: offline, online, total).
    """
    from .launch import LocalCluster
    if images is None:
        raise ValueError('images are required (see load_test_inputs)')
    if test_indices is not None:
        if isinstance(config, nn.Module):
            raise ValueError('test_indices needs the config (and checkpoint) for the stock '
                             'test path, not a built model')
        if labels is None:
            raise ValueError('test_indices needs the labels of the images')
        if len(test_indices) != images.shape[0]:
            raise ValueError(f'{len(test_indices)} test_indices for {images.shape[0]} images')
    if isinstance(config, nn.Module):
        model = config
    else:
        from ..utils.config import build_model
        model = build_model(config, spec=spec, checkpoint=checkpoint)
    model = model.eval()
    calibration = None
    if calibration_images is not None:
        from .calibrate import measure_ranges
        calibration = measure_ranges(model, calibration_images)
    program = compile_model(model, bits=bits, shift=shift, relu_bits=relu_bits,
                            pool_bits=pool_bits, frac_bits=frac_bits,
                            pool_before_relu=pool_before_relu,
                            in_channels=int(images.shape[1]), calibration=calibration,
                            trace_size=tuple(images.shape[2:]),
                            margin=margin)
    public = program.public()
    batches = _batches(images, batch_size)
    shapes = [tuple(b.shape) for b in batches]
    args = {'client': (public, batches, party_threads, progress),
            'server': (program, shapes, party_threads),
            'helper': (public, shapes, party_threads)}
    own = cluster is None
    if own:
        cluster = LocalCluster(timeout=timeout, frac_bits=frac_bits, light=True)
    try:
        wall = time.perf_counter()
        res = cluster.run(run_party, args, wait=timeout)
        wall = time.perf_counter() - wall
    finally:
        if own:
            cluster.close()

    # ---- predictions and agreement (client side, in the clear)
    n = images.shape[0]
    logits = torch.cat(res['client']['logits'])
    plain = plaintext_logits(model, images)
    if program.task == 'segmentation':
        sizes = [tuple(labels[i].shape[-2:]) if labels is not None else tuple(images.shape[2:])
                 for i in range(n)]
    else:
        sizes = [None] * n
    preds, plain_preds = _predict(program, logits, sizes), _predict(program, plain, sizes)
    agree = [float((p == q).double().mean()) for p, q in zip(preds, plain_preds)]
    out: Dict[str, Any] = {
        'task': program.task, 'num_images': n, 'batch_size': batch_size,
        'options': dict(program.options),
        'predictions': preds, 'plain_predictions': plain_preds,
        'logits': logits, 'plain_logits': plain,
        'agreement': float(np.mean(agree)),
        'max_logit_error': float((logits - plain).abs().max()),
        'calibration': program.calibration_report() if calibration is not None else None,
        'margin': margin if calibration is not None else None,
    }
    if labels is not None:
        if program.task == 'segmentation':
            num_classes = logits.shape[1]
            out['miou'] = segmentation_miou(preds, labels, num_classes)
            out['plain_miou'] = segmentation_miou(plain_preds, labels, num_classes)
        else:
            lab = torch.as_tensor([int(v) for v in labels])
            out['accuracy'] = float((torch.stack(preds) == lab).double().mean() * 100)
            out['plain_accuracy'] = float((torch.stack(plain_preds) == lab).double().mean() * 100)
        seg = program.task == 'segmentation'
        name = 'mIoU' if seg else 'accuracy/top1'
        out['metric'] = {'name': name, 'secure': out['miou' if seg else 'accuracy'],
                         'plaintext': out['plain_miou' if seg else 'plain_accuracy'],
                         'stock': None, 'test_set': test_set_metric}
        if test_indices is not None:
            from ..utils.stock_test import stock_test
            stock = stock_test(config, checkpoint, spec, test_indices)
            if name not in stock:
                raise ValueError(f'the config\'s test evaluator reports {sorted(stock)}, '
                                 f'not {name}')
            out['metric']['stock'] = stock[name]

    # ---- bytes: measured (meters) and predicted (cost model)
    per_role = {r: [rec for batch in res[r]['records'] for rec in batch] for r in ROLES}
    if own:
        for r in ROLES:
            per_role[r] = res[r]['handshake'] + per_role[r]
    layers = measured_costs(per_role)
    total = sum(layers.values(), _cost.Cost())
    predicted = session_costs(program, shapes, 'ours')
    if not own:  # the key agreement happened before, on the reused cluster
        predicted.layers.pop('handshake', None)
        predicted.total = sum(predicted.layers.values(), _cost.Cost())
    out['bytes'] = _bytes_summary(total, n)
    out['bytes']['handshake'] = layers.get('handshake', _cost.Cost()).session
    out['bytes']['weights'] = total.session - out['bytes']['handshake']
    out['layers'] = {k: {'session': c.session, 'offline': c.offline, 'online': c.online}
                     for k, c in layers.items()}
    out['predicted'] = predicted
    out['predicted_equal'] = (total == predicted.total and all(
        layers.get(k, _cost.Cost()) == c for k, c in predicted.layers.items()))
    out['measured'] = layers
    out['rounds'] = predicted.total.rounds // max(1, len(shapes))

    # ---- time (the client's wall clock, as the paper measures it)
    times = np.asarray(res['client']['times'])
    out['time'] = {'offline_per_image': float(times[:, 0].sum() / n),
                   'online_per_image': float(times[:, 1].sum() / n),
                   'total_per_image': float(times.sum() / n),
                   'wall': wall}
    return out


def _bytes_summary(total: _cost.Cost, n: int) -> Dict[str, Any]:
    per_party: Dict[str, Dict[str, int]] = {r: defaultdict(int) for r in ROLES}
    for (phase, src, dst), v in total.parts.items():
        per_party[src][f'{phase}:sent->{dst}'] += v
        per_party[dst][f'{phase}:recv<-{src}'] += v
    return {
        'session': total.session, 'offline': total.offline, 'online': total.online,
        'total': total.total(),
        'parts': {f'{p}:{s}->{d}': v for (p, s, d), v in sorted(total.parts.items())},
        'per_party': {r: dict(sorted(v.items())) for r, v in per_party.items()},
        'per_image': {'session': total.session / n, 'offline': total.offline / n,
                      'online': total.online / n,
                      'online_offline': (total.online + total.offline) / n,
                      'total': total.total() / n},
    }


# ----------------------------------------------------------------- data
def _step_type(step) -> str:
    t = step['type']
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def _read_image(path: str, model: nn.Module) -> Dict[str, Any]:
    """An image file as an in-memory dataset's sample: ``img`` uint8 in RGB order
    (H x W x 3; H x W when the model's first conv takes one channel)."""
    from PIL import Image
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    gray = first is not None and first.in_channels == 1
    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert('L' if gray else 'RGB'))
    except OSError as e:
        raise ValueError(f'cannot read image file {path}: {e}') from None
    return dict(img=img, img_path=path, img_shape=img.shape[:2], ori_shape=img.shape[:2])


def load_test_inputs(cfg, model: nn.Module, num_images: int,
                     image_files: Optional[Sequence[str]] = None,
                     indices: Optional[Sequence[int]] = None
                     ) -> Tuple[Tensor, Optional[List]]:
    """Model inputs (and labels) from the config's test data, or from image files.

    The stock test path, step by step: the test dataloader's dataset runs its
    pipeline, the dataloader's ``collate_fn`` (default ``pseudo_collate``)
    makes the batch, and the model's own ``data_preprocessor`` (inference
    mode) normalises it, converts colour order and, for mmseg, pads it. The
    model must come from :func:`..utils.config.build_model` (or the Runner),
    which merges the config's top-level ``data_preprocessor`` into it.
    Image files go through the test pipeline without annotation loading;
    a pipeline without a loading step (an in-memory dataset's) gets them read
    as RGB uint8 arrays, the layout of the plugin's and mmpretrain's CIFAR
    datasets (gray files replicated to 3 channels).

    Args:
        cfg: Config or its path.
        model: The config's model (its ``data_preprocessor`` is used).
        num_images: How many images (the first ones of ``indices``).
        image_files: Image files instead of the test dataset.
        indices: Test dataset indices (default ``0 .. num_images - 1``).

    Returns:
        ``(inputs (N, C, H, W) float, labels or None)``; labels are class
        indices (classification) or ``(H, W)`` label maps (segmentation).
        Images of different sizes are padded by the preprocessor only when
        it does so itself; otherwise they must share a size.
    """
    from mmengine.dataset import Compose
    from mmengine.registry import DATASETS, init_default_scope
    from ..utils.config import codebase, collate_fn, load_config
    cfg = load_config(cfg)
    init_default_scope(codebase(cfg))
    if image_files:
        pipeline = [dict(step) for step in cfg.test_dataloader.dataset.pipeline
                    if 'Annotation' not in _step_type(step)]
        pipe = Compose(pipeline)
        # A pipeline without a loading step belongs to an in-memory dataset
        # (CIFAR, the Fashion-MNIST demos) that hands it ``img`` itself: read
        # the files as such a dataset would (see _read_image).
        loads = any(_step_type(step).startswith('Load') for step in pipeline)
        items = []
        for f in image_files[:num_images]:
            if not os.path.isfile(f):
                raise FileNotFoundError(f'image file not found: {f}')
            items.append(pipe(dict(img_path=f) if loads else _read_image(f, model)))
    else:
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        if indices is None:
            indices = range(min(num_images, len(dataset)))
        indices = list(indices)[:num_images]
        bad = [i for i in indices if not 0 <= int(i) < len(dataset)]
        if bad:
            raise ValueError(f'test image index {bad[0]} is outside the test dataset '
                             f'({len(dataset)} images)')
        items = [dataset[int(i)] for i in indices]
    if not items:
        raise ValueError('no test images: num_images is 0 or the test dataset is empty')
    with torch.no_grad():
        data = model.data_preprocessor(collate_fn(cfg.test_dataloader)(items), False)
    inputs = data['inputs']
    if isinstance(inputs, (list, tuple)):
        inputs = torch.stack(list(inputs))
    labels = None
    samples = data.get('data_samples') or []
    if any(type(s).__name__ == 'SegDataSample' and any(
            s.metainfo.get('img_padding_size') or s.metainfo.get('padding_size') or [])
           for s in samples):
        # mmseg crops test-time padding off the logits before resizing them;
        # the secure client's postprocess does not know the padding.
        raise ValueError('the segmentation data_preprocessor pads test images (its test_cfg); '
                         'secure inference needs unpadded inputs (drop test_cfg size / '
                         'size_divisor or resize in the test pipeline)')
    if not image_files and samples:
        if hasattr(samples[0], 'gt_sem_seg'):
            labels = [s.gt_sem_seg.data[0] for s in samples]
        elif hasattr(samples[0], 'gt_label'):
            labels = [int(s.gt_label[0]) for s in samples]
    return inputs.float(), labels

