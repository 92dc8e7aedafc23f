"""Channel distortion of Block-ReLU candidates, and the files that hold it.

The distortion of candidate ``b`` on channel ``c`` of site ``s`` (METHOD.md,
"Choosing patch sizes under a budget", step 2) is the mean squared difference
between the network output with only that channel turned into Block-ReLU(b)
and the unmodified output, averaged over N training samples and over the
output elements (classification logits; segmentation decode-head logits, i.e.
:func:`run_tensor_forward`).

``exact`` simulates it, batched: the normal forward runs on ``B`` samples, and
at an *expansion point* (a forward pre-hook) the input is repeated ``P`` times,
while a hook on the site replaces, in copy ``p``, channel ``c_p`` by
Block-ReLU(``b_p``) of the site input. The expansion point is the site itself
when possible, else the nearest earlier point at which every tensor that the
suffix combines is expanded too: the input of an ancestor module or the output
of an earlier sibling along the module path (found once per site by dry runs,
nearest first; e.g. the ResNet block for ``relu1``, whose identity branch is
added after it, or the backbone output for an ASPP branch, which is
concatenated with the others). So the prefix up to the expansion point runs
once per ``P`` perturbations, and no network needs per-architecture code.

``sketch`` (:mod:`.sketch`) estimates the same quantity to first order.

A distortion directory holds::

    manifest.json                      sites, shapes, candidates, method, samples, seed, model
    values/<site>.c<start>-<stop>.npy  float64 (stop - start, K_site) distortions
    partial/batch_<i>.npy              (sketch only, while running) per-batch sums

Every ``.npy`` is written atomically (temp file + ``os.replace``) and read with
``allow_pickle=False``, so a killed run resumes where it stopped: finished
work items are skipped, nothing is lost or done twice. Work items (``exact``:
a site's channel chunk; ``sketch``: a sample batch) are split round-robin by
``torch.distributed`` rank and computed independently of the rank, so any
number of workers writes identical files.
"""
import copy
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..conversion.sites import ReLUSite, find_relu_sites, run_tensor_forward
from ..conversion.split import split_reused_relus
from ..layers.block_relu import RELU, BlockReLU
from .candidates import default_candidates

FORMAT = 'block_relu_distortion'
VERSION = 1
METHODS = ('exact', 'sketch')
MANIFEST = 'manifest.json'

CandidateFn = Callable[[int, int], np.ndarray]


class DistortionError(ValueError):
    """A distortion directory is missing, incomplete or from another extraction."""


# --------------------------------------------------------------------- files
@dataclass
class Distortion:
    """The contents of a complete distortion directory.

    Attributes:
        path: The directory.
        manifest: The parsed ``manifest.json``.
        sites: The sites, in execution order.
        candidates: Site name -> ``(K, 2)`` int64 candidate patch sizes.
        values: Site name -> ``(C, K)`` float64 distortions.
    """
    path: str
    manifest: dict
    sites: List[ReLUSite]
    candidates: Dict[str, np.ndarray]
    values: Dict[str, np.ndarray]

    @property
    def method(self) -> str:
        return self.manifest['method']


def _site_entries(manifest: dict):
    for entry in manifest['sites']:
        yield (ReLUSite(entry['name'], entry['channels'], entry['height'], entry['width']),
               np.asarray(entry['candidates'], dtype=np.int64).reshape(-1, 2), entry['chunks'])


def _chunk_path(path: str, file: str) -> str:
    return os.path.join(path, 'values', file)


def read_manifest(path: str) -> dict:
    """The manifest of distortion directory ``path``.

    Raises:
        DistortionError: if there is none or it is not a distortion manifest.
    """
    file = os.path.join(path, MANIFEST)
    try:
        with open(file, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DistortionError(f'{path} is not a distortion directory: cannot read '
                              f'{MANIFEST} ({e})') from None
    if manifest.get('format') != FORMAT or manifest.get('version') != VERSION:
        raise DistortionError(f'{file}: not a {FORMAT} v{VERSION} manifest')
    return manifest


def missing_chunks(path: str, manifest: Optional[dict] = None) -> List[str]:
    """Value files of ``path`` not written yet (empty when the extraction is complete)."""
    manifest = manifest or read_manifest(path)
    return [file for _, _, chunks in _site_entries(manifest) for _, _, file in chunks
            if not os.path.exists(_chunk_path(path, file))]


def load_distortion(path: str) -> Distortion:
    """Load a complete distortion directory.

    Raises:
        DistortionError: if the directory is incomplete or a file is malformed.
    """
    path = os.fspath(path)
    manifest = read_manifest(path)
    missing = missing_chunks(path, manifest)
    if missing:
        raise DistortionError(f'{path} is incomplete: {len(missing)} value file(s) missing '
                              f'(first {missing[0]}); resume the extraction with the same '
                              'arguments')
    sites, candidates, values = [], {}, {}
    for site, cand, chunks in _site_entries(manifest):
        parts = []
        for start, stop, file in chunks:
            arr = np.load(_chunk_path(path, file), allow_pickle=False)
            if arr.shape != (stop - start, len(cand)) or arr.dtype != np.float64:
                raise DistortionError(f'{file}: expected float64 {(stop - start, len(cand))}, '
                                      f'got {arr.dtype} {arr.shape}')
            parts.append(arr)
        sites.append(site)
        candidates[site.name] = cand
        values[site.name] = np.concatenate(parts) if parts else np.zeros((0, len(cand)))
    return Distortion(path, manifest, sites, candidates, values)


def distortion_fingerprint(path: str) -> str:
    """SHA-256 over the manifest and every value file: changes when any of them does."""
    manifest = read_manifest(path)
    digest = hashlib.sha256()
    with open(os.path.join(path, MANIFEST), 'rb') as f:
        digest.update(f.read())
    for _, _, chunks in _site_entries(manifest):
        for _, _, file in chunks:
            with open(_chunk_path(path, file), 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def _atomic_write(path: str, write: Callable) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_array(path: str, array: np.ndarray) -> None:
    """``np.save`` (no pickle) through a temp file, so ``path`` is whole or absent."""
    _atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def _save_manifest(path: str, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True) + '\n'
    _atomic_write(os.path.join(path, MANIFEST), lambda f: f.write(text.encode('utf-8')))


# ------------------------------------------------------------ model helpers
def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def output_tensor(out) -> Tensor:
    """The network output as one ``N x ...`` tensor."""
    if isinstance(out, Tensor):
        return out
    raise TypeError(f'the network output is a {type(out).__name__}; distortion needs one '
                    'tensor (classifier logits or decode-head logits)')


@torch.no_grad()
def reference_outputs(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """The unmodified network's outputs for ``inputs``, on the CPU."""
    device = model_device(model)
    outs = [output_tensor(run_tensor_forward(model, inputs[i:i + batch_size].to(device))).cpu()
            for i in range(0, len(inputs), batch_size)]
    return torch.cat(outs)


def _expand(obj, batch: int, copies: int):
    """Repeat every batch tensor in ``obj`` (tensors, lists, tuples, dicts) ``copies`` times."""
    if isinstance(obj, Tensor):
        if obj.dim() >= 1 and obj.shape[0] == batch:
            return obj.repeat(copies, *([1] * (obj.dim() - 1)))
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_expand(o, batch, copies) for o in obj]
        return type(obj)(items) if not hasattr(obj, '_fields') else type(obj)(*items)
    if isinstance(obj, dict):
        return {k: _expand(v, batch, copies) for k, v in obj.items()}
    return obj


#: Suffix of an expansion point at a module's output rather than its input.
OUTPUT = ':output'


class _Perturber:
    """Hooks that run ``P`` single-channel Block-ReLU perturbations of one site at once.

    Copy ``p`` of the ``P x b`` batch (copy-major) has channel ``channels[p]``
    of the site replaced by Block-ReLU(``sizes[p]``) of the site input. The
    copies are made at the expansion point: the input of module ``path``, or
    its output for ``path + ':output'``.
    """

    def __init__(self, model: nn.Module, site: ReLUSite, expansion: str):
        modules = dict(model.named_modules())
        self.site = site
        self.site_module = modules[site.name]
        self.at_output = expansion.endswith(OUTPUT)
        self.expansion_module = modules[expansion[:-len(OUTPUT)] if self.at_output else expansion]
        self.handles = []

    def __enter__(self):
        # Expansion first: when it is the site itself, the site hook sees the copies.
        m = self.expansion_module
        self.handles = [m.register_forward_hook(self._expand_output) if self.at_output
                        else m.register_forward_pre_hook(self._expand_input),
                        self.site_module.register_forward_pre_hook(self._site_input),
                        self.site_module.register_forward_hook(self._site_output)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def begin(self, channels: Sequence[int], sizes: np.ndarray, batch: int) -> None:
        """Set the perturbations of the next forward of a ``batch``-sample input."""
        self.channels = torch.as_tensor(np.asarray(channels, dtype=np.int64))
        self.act = BlockReLU(sizes)
        self.batch = batch
        self.expanded = False
        self.replacement = None

    def _expand_input(self, module, args):
        if self.expanded:
            return None
        self.expanded = True
        return _expand(args, self.batch, len(self.channels))

    def _expand_output(self, module, args, output):
        if self.expanded:
            return None
        self.expanded = True
        return _expand(output, self.batch, len(self.channels))

    def _site_input(self, module, args):
        x = args[0]
        P, b = len(self.channels), self.batch
        if x.shape[0] != P * b:
            raise RuntimeError(f'site {self.site.name!r} sees a batch of {x.shape[0]}, '
                               f'expected {P} x {b}')
        ch = self.channels.to(x.device)
        # (P, b, L): copy p's perturbed channel; a copy, since the ReLU may be in place.
        xs = x.reshape(P, b, x.shape[1], -1)[torch.arange(P, device=x.device), :, ch]
        h, w = (self.site.height, self.site.width) if x.dim() == 4 else (1, 1)
        y = self.act.to(x.device)(xs.transpose(0, 1).reshape(b, P, h, w))
        self.replacement = y.reshape(b, P, -1).transpose(0, 1)

    def _site_output(self, module, args, output):
        P, b = len(self.channels), self.batch
        out = output.clone(memory_format=torch.contiguous_format)
        ch = self.channels.to(out.device)
        out.view(P, b, out.shape[1], -1)[torch.arange(P, device=out.device), :, ch] = \
            self.replacement
        self.replacement = None
        return out


def _parent(name: str) -> Optional[str]:
    return None if name == '' else name.rpartition('.')[0]


@torch.no_grad()
def expansion_candidates(model: nn.Module, site: ReLUSite, x: Tensor) -> List[str]:
    """Points where copies could start, nearest to the site first.

    One forward records when modules start and end. Before the site starts,
    the candidates are the inputs of its ancestors (and of the site itself)
    and the outputs of modules whose parent is an ancestor (earlier siblings
    along the module path, e.g. a backbone before a head that its segmentor
    calls without ``__call__``). Modules called more than once are skipped.
    """
    names = {m: n for n, m in model.named_modules()}
    events, calls = [], {}

    def pre(module, args):
        events.append((names[module], False))
        calls[names[module]] = calls.get(names[module], 0) + 1

    def post(module, args, output):
        events.append((names[module], True))

    handles = [m.register_forward_pre_hook(pre) for m in names]
    handles += [m.register_forward_hook(post) for m in names]
    try:
        run_tensor_forward(model, x)
    finally:
        for h in handles:
            h.remove()
    start = events.index((site.name, False))
    ancestors, parent = {site.name}, _parent(site.name)
    while parent is not None:
        ancestors.add(parent)
        parent = _parent(parent)
    found = []
    for name, ended in reversed(events[:start + 1]):
        if calls[name] != 1 or name == site.name and ended:
            continue
        if ended and name not in ancestors and _parent(name) in ancestors:
            found.append(name + OUTPUT)
        elif not ended and name in ancestors:
            found.append(name)
    return found


@torch.no_grad()
def find_expansion_point(model: nn.Module, site: ReLUSite, inputs: Tensor) -> str:
    """Where the perturbation copies of ``site`` start: as late as correctness allows.

    Dry runs with 2 copies of 2 samples and ReLU "perturbations" (no change)
    try the :func:`expansion_candidates` from the nearest; the first whose
    output has ``2 x 2`` samples, each equal to the unmodified output, is the
    answer. Two samples make sure that a tensor computed before the expansion
    point and combined with the copies after it fails to broadcast.

    Args:
        model: The network, in eval mode.
        site: The site.
        inputs: At least one sample (``N x C x H x W``).

    Returns:
        str: a module path (its input; '' is the model input), or a module
        path + ``':output'`` (its output).

    Raises:
        RuntimeError: if even expanding the model input fails.
    """
    device = model_device(model)
    x = inputs[:2].to(device)
    if len(x) < 2:
        x = torch.cat([x, 0.5 * x])
    ref = output_tensor(run_tensor_forward(model, x))
    channels = [0, site.channels - 1]
    errors = []
    for point in expansion_candidates(model, site, x):
        try:
            with _Perturber(model, site, point) as pert:
                pert.begin(channels, np.array([RELU, RELU]), 2)
                out = output_tensor(run_tensor_forward(model, x))
        except Exception as e:  # a shape mismatch: the copies start too late
            errors.append(f'{point or "<model>"}: {type(e).__name__}: {e}')
            continue
        if out.shape[0] == 4 and torch.allclose(
                out.reshape(2, *ref.shape), ref.expand(2, *ref.shape),
                rtol=1e-4, atol=1e-5 * float(ref.abs().max() + 1)):
            return point
        errors.append(f'{point or "<model>"}: the copies do not reproduce the output')
    raise RuntimeError(f'no expansion point works for site {site.name!r}:\n  '
                       + '\n  '.join(errors))


@torch.no_grad()
def exact_distortion(model: nn.Module,
                     inputs: Tensor,
                     site: ReLUSite,
                     channels: Sequence[int],
                     candidates: np.ndarray,
                     batch_size: int = 8,
                     forward_batch: int = 512,
                     expansion: Optional[str] = None,
                     reference: Optional[Tensor] = None) -> np.ndarray:
    """The paper's channel distortion, simulated in batched partial forwards.

    Args:
        model: The network (eval mode, ReLU sites split).
        inputs: ``N x C x H x W`` samples.
        site: The site.
        channels: Channels of the site to evaluate.
        candidates: ``(K, 2)`` patch sizes.
        batch_size: Samples per forward.
        forward_batch: Most perturbed copies x samples per forward.
        expansion: The expansion point (default: :func:`find_expansion_point`).
        reference: The unmodified outputs (default: computed).

    Returns:
        np.ndarray: ``(len(channels), K)`` float64 mean squared output
        differences; 0 for the ReLU candidate ``(1, 1)``, which changes nothing.
    """
    was_training = model.training
    model.eval()
    try:
        if expansion is None:
            expansion = find_expansion_point(model, site, inputs)
        if reference is None:
            reference = reference_outputs(model, inputs, batch_size)
        candidates = np.asarray(candidates, dtype=np.int64).reshape(-1, 2)
        channels = [int(c) for c in channels]
        K = len(candidates)
        active = [k for k in range(K) if tuple(candidates[k]) != RELU]
        perts = [(i, k) for i in range(len(channels)) for k in active]
        sums = np.zeros((len(channels), K))
        device = model_device(model)
        with _Perturber(model, site, expansion) as pert:
            for start in range(0, len(inputs), batch_size):
                x = inputs[start:start + batch_size].to(device)
                ref = reference[start:start + batch_size].to(device)
                b = len(x)
                step = max(1, forward_batch // b)
                for g in range(0, len(perts), step):
                    group = perts[g:g + step]
                    rows = np.array([i for i, _ in group])
                    cols = np.array([k for _, k in group])
                    pert.begin([channels[i] for i in rows], candidates[cols], b)
                    out = output_tensor(run_tensor_forward(model, x))
                    diff = out.reshape(len(group), b, -1) - ref.reshape(1, b, -1)
                    sse = diff.square().sum(dim=(1, 2), dtype=torch.float64)
                    sums[rows, cols] += sse.cpu().numpy()
        return sums / (len(inputs) * reference[0].numel())
    finally:
        model.train(was_training)


# ------------------------------------------------------------------ runner
def _dist_info() -> Tuple[int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def inputs_digest(inputs: Tensor) -> str:
    """SHA-256 of the samples, so a resumed run cannot mix two sample sets."""
    return hashlib.sha256(inputs.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def build_manifest(sites: Sequence[ReLUSite],
                   method: str,
                   inputs: Tensor,
                   output_elements: int,
                   candidates: CandidateFn = default_candidates,
                   chunk_channels: int = 16,
                   settings: Optional[dict] = None,
                   info: Optional[dict] = None) -> dict:
    """The manifest of an extraction: everything that determines its files."""
    entries = []
    for i, s in enumerate(sites):
        cand = np.asarray(candidates(s.height, s.width), dtype=np.int64).reshape(-1, 2)
        chunks = [[a, min(a + chunk_channels, s.channels),
                   f'{i:03d}.{s.name}.c{a:05d}-{min(a + chunk_channels, s.channels):05d}.npy']
                  for a in range(0, s.channels, chunk_channels)]
        entries.append(dict(name=s.name, channels=s.channels, height=s.height, width=s.width,
                            candidates=cand.tolist(), chunks=chunks))
    manifest = dict(format=FORMAT, version=VERSION, method=method,
                    num_samples=int(len(inputs)), input_size=list(inputs.shape[2:]),
                    inputs_sha256=inputs_digest(inputs), output_elements=int(output_elements),
                    chunk_channels=int(chunk_channels), settings=dict(settings or {}),
                    model=dict(info or {}), sites=entries)
    # As it reads back from JSON (tuples become lists), so resumes compare equal.
    return json.loads(json.dumps(manifest))


def _prepare_dir(out_dir: str, manifest: dict, rank: int) -> None:
    """Write the manifest (rank 0), or check that an existing one matches.

    Every rank checks an existing manifest itself, so a mismatch stops all
    ranks alike instead of leaving some waiting at a barrier.
    """
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        old = read_manifest(out_dir)
        if old != manifest:
            keys = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise DistortionError(f'{out_dir} holds another extraction (differs in {keys}); '
                                  'use a new output directory')
    elif rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        _save_manifest(out_dir, manifest)
    _barrier()
    if read_manifest(out_dir) != manifest:
        raise DistortionError(f'rank {rank}: the manifest of {out_dir} differs from this '
                              "rank's extraction (different samples or model?)")


def extract_distortion(model: nn.Module,
                       inputs: Tensor,
                       out_dir: str,
                       method: str = 'exact',
                       batch_size: int = 8,
                       forward_batch: int = 512,
                       num_probes: int = 8,
                       chunk_channels: int = 16,
                       seed: int = 0,
                       candidates: CandidateFn = default_candidates,
                       info: Optional[dict] = None,
                       max_items: Optional[int] = None,
                       progress: bool = False) -> bool:
    """Extract the channel distortions of every site into ``out_dir`` (resumable).

    Work items are split round-robin over the ``torch.distributed`` ranks when
    a process group is initialised; call it on every rank.

    Args:
        model: The network with its weights (put in eval mode; its shared
            ReLUs are split here, as conversion does).
        inputs: ``N x C x H x W`` preprocessed training samples.
        out_dir: The distortion directory (created, or resumed).
        method: ``'exact'`` or ``'sketch'``.
        batch_size: Samples per forward (``sketch`` keeps ``batch_size x
            num_probes`` gradients of every site: about 4 bytes x ReLU count
            each, so use small batches for ImageNet-size networks).
        forward_batch: ``exact``: most perturbed copies x samples per forward.
        num_probes: ``sketch``: random output probes per sample.
        chunk_channels: Channels per value file.
        seed: Seed of the sketch probes (recorded; sample drawing is the caller's).
        candidates: ``(H, W) -> (K, 2)`` candidate patch sizes of a site.
        info: Model description for the manifest (config, checkpoint, ...).
        max_items: Stop after this many new work items on this rank (a time
            slice; the next call resumes).
        progress: Show a tqdm bar on rank 0.

    Returns:
        bool: whether the directory is complete.
    """
    if method not in METHODS:
        raise ValueError(f'method must be one of {METHODS}, got {method!r}')
    rank, world = _dist_info()
    model.eval()
    split_reused_relus(model)
    sites = find_relu_sites(model, tuple(inputs.shape[2:]), in_channels=inputs.shape[1])
    with torch.no_grad():
        out = output_tensor(run_tensor_forward(model, inputs[:1].to(model_device(model))))
    settings = dict(batch_size=batch_size, seed=seed)
    if method == 'exact':
        settings['forward_batch'] = forward_batch
    else:
        settings['num_probes'] = num_probes
    manifest = build_manifest(sites, method, inputs, out[0].numel(), candidates,
                              chunk_channels, settings, info)
    _prepare_dir(out_dir, manifest, rank)
    if not missing_chunks(out_dir, manifest):
        partial = os.path.join(out_dir, 'partial')
        if rank == 0 and os.path.isdir(partial):  # a stop while the sketch merge cleaned up
            for name in os.listdir(partial):
                os.unlink(os.path.join(partial, name))
            os.rmdir(partial)
        return True
    run = _run_exact if method == 'exact' else _run_sketch
    return run(model, inputs, out_dir, manifest, rank, world, max_items, progress)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def _run_exact(model, inputs, out_dir, manifest, rank, world, max_items, progress) -> bool:
    s = manifest['settings']
    items = [(site, cand, start, stop, file)
             for site, cand, chunks in _site_entries(manifest) for start, stop, file in chunks]
    mine = [it for it in items[rank::world] if not os.path.exists(_chunk_path(out_dir, it[4]))]
    if max_items is not None:
        mine = mine[:max_items]
    reference, expansion = None, {}
    with _progress(len(mine), f'exact distortion (rank {rank})', progress and rank == 0) as bar:
        for site, cand, start, stop, file in mine:
            if reference is None:
                reference = reference_outputs(model, inputs, s['batch_size'])
            if site.name not in expansion:
                expansion[site.name] = find_expansion_point(model, site, inputs)
            values = exact_distortion(model, inputs, site, range(start, stop), cand,
                                      s['batch_size'], s['forward_batch'],
                                      expansion[site.name], reference)
            save_array(_chunk_path(out_dir, file), values)
            bar.update()
            bar.set_postfix_str(site.name)
    _barrier()
    return not missing_chunks(out_dir, manifest)


def _run_sketch(model, inputs, out_dir, manifest, rank, world, max_items, progress) -> bool:
    from .sketch import SketchState, batch_generator, sketch_batch
    s = manifest['settings']
    entries = list(_site_entries(manifest))
    sites = [site for site, _, _ in entries]
    cands = {site.name: cand for site, cand, _ in entries}
    bs = s['batch_size']
    batches = list(range(-(-len(inputs) // bs)))
    partial = os.path.join(out_dir, 'partial')

    def part(i):
        return os.path.join(partial, f'batch_{i:05d}.npy')

    mine = [i for i in batches[rank::world] if not os.path.exists(part(i))]
    if max_items is not None:
        mine = mine[:max_items]
    state = SketchState()
    device = model_device(model)
    with _progress(len(mine), f'sketch distortion (rank {rank})', progress and rank == 0) as bar:
        for i in mine:
            x = inputs[i * bs:(i + 1) * bs].to(device)
            sums = sketch_batch(model, x, sites, cands, s['num_probes'],
                                batch_generator(s['seed'], i), state)
            save_array(part(i), np.concatenate([sums[site.name].ravel() for site in sites]))
            bar.update()
    _barrier()
    if rank == 0 and all(os.path.exists(part(i)) for i in batches):
        # Summed in batch order, so the result does not depend on the ranks.
        total = 0.0
        for i in batches:
            total = total + np.load(part(i), allow_pickle=False)
        total = total / len(inputs)
        offset = 0
        for site, cand, chunks in entries:
            values = total[offset:offset + site.channels * len(cand)].reshape(site.channels, -1)
            offset += values.size
            for start, stop, file in chunks:
                save_array(_chunk_path(out_dir, file), values[start:stop])
        for i in batches:
            os.unlink(part(i))
        os.rmdir(partial)
    _barrier()
    return not missing_chunks(out_dir, manifest)


# ------------------------------------------------------------------ samples
#: block_relu_cfg keys that choose patch sizes: distortion is measured without them.
_SPEC_KEYS = ('spec', 'budget', 'distortion', 'solver', 'candidates')


def build_plain_model(cfg, checkpoint: Optional[str] = None, device: str = 'cpu',
                      seed: int = 0) -> nn.Module:
    """The config's network with its architecture edits but no patch sizes (all ReLU).

    Args:
        cfg: Config or its path.
        checkpoint: Weights, or None / ``'none'`` for the initial weights
            (seeded with ``seed``, so every rank builds the same network).
        device: Where to put it.
        seed: Seed of the initial weights.
    """
    from ..utils.config import build_model, load_config
    cfg = load_config(cfg)
    brc = cfg.model.get('block_relu_cfg')
    if brc:
        cfg.model.block_relu_cfg = {k: v for k, v in brc.items() if k not in _SPEC_KEYS}
    torch.manual_seed(seed)
    if checkpoint in (None, 'none', 'None'):
        checkpoint = None
    model = build_model(cfg, checkpoint=checkpoint, device=device)
    return split_reused_relus(model).eval()


def _pipeline_of(dataset_cfg) -> Optional[list]:
    """The pipeline of a dataset config, looking inside wrappers."""
    if dataset_cfg.get('pipeline') is not None:
        return list(dataset_cfg['pipeline'])
    inner = dataset_cfg.get('dataset') or (dataset_cfg.get('datasets') or [None])[0]
    return _pipeline_of(inner) if inner else None


def _with_pipeline(dataset_cfg, pipeline: list):
    """A copy of a dataset config (wrappers included) with every pipeline replaced."""
    out = copy.deepcopy(dataset_cfg)
    if out.get('datasets') is not None:
        out['datasets'] = [_with_pipeline(d, pipeline) for d in out['datasets']]
    elif out.get('dataset') is not None and out.get('pipeline') is None:
        out['dataset'] = _with_pipeline(out['dataset'], pipeline)
    else:
        out['pipeline'] = copy.deepcopy(pipeline)
    return out


def distortion_dataset(cfg):
    """The training set through the deterministic pipeline distortions are measured with.

    As the authors did: training images, but through a test-style pipeline
    (CIFAR: none; ImageNet: resize 256, centre crop 224; segmentation: resize
    to (2048, 512)), never the augmented training one. The pipeline is the
    config's ``distortion_pipeline`` if it has one, else its test pipeline.
    """
    loader = cfg.get('train_dataloader')
    if not loader or not loader.get('dataset'):
        raise ValueError('the config has no train_dataloader.dataset to draw samples from')
    pipeline = cfg.get('distortion_pipeline')
    if pipeline is None:
        test = (cfg.get('test_dataloader') or {}).get('dataset')
        pipeline = _pipeline_of(test) if test else None
        if pipeline is None:
            raise ValueError('the config has no test_dataloader pipeline to measure '
                             'distortions through; set distortion_pipeline=[...]')
    return _with_pipeline(loader['dataset'], list(pipeline))


def _fit(x: Tensor, shape) -> Tensor:
    """Centre-crop ``x`` to ``shape`` where it is larger on both sides (the
    authors' segmentation samples: resize, then centre crop), else resize."""
    import torch.nn.functional as F
    h, w = x.shape[2:]
    th, tw = shape
    if (h, w) == (th, tw):
        return x
    if h >= th and w >= tw:
        top, left = (h - th) // 2, (w - tw) // 2
        return x[:, :, top:top + th, left:left + tw]
    return F.interpolate(x, size=(th, tw), mode='bilinear', align_corners=False)


def load_samples(cfg, model: nn.Module, num_samples: int, seed: int,
                 shape: Tuple[int, int]) -> Tuple[Tensor, List[int]]:
    """Draw ``num_samples`` training samples through a deterministic pipeline and the preprocessor.

    Samples are drawn without replacement from ``cfg.train_dataloader.dataset``
    with ``seed``, passed through the config's test pipeline (or its
    ``distortion_pipeline``; :func:`distortion_dataset`), collated by the
    dataloader's ``collate_fn``, put through the model's ``data_preprocessor``
    (inference mode; the model must come from
    :func:`..utils.config.build_model` or :func:`build_plain_model`, which
    merge the config's top-level ``data_preprocessor`` into it), and brought to
    ``shape`` (every site needs one spatial size): centre-cropped where larger
    on both sides, else resized (bilinear). The same samples serve ``exact``,
    ``sketch`` and the calibration of approximate comparisons.

    Returns:
        (inputs, indices): ``N x C x H x W`` float tensor on the CPU and the
        dataset indices drawn.
    """
    import random

    from mmengine.registry import DATASETS, init_default_scope

    from ..utils.config import codebase, collate_fn
    init_default_scope(codebase(cfg))
    loader = cfg.get('train_dataloader')
    dataset = DATASETS.build(distortion_dataset(cfg))
    if num_samples > len(dataset):
        raise ValueError(f'{num_samples} samples requested, the training set has {len(dataset)}')
    indices = np.random.default_rng(seed).choice(len(dataset), num_samples, replace=False)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    preprocessor = getattr(model, 'data_preprocessor', None)
    collate = collate_fn(loader)
    samples = []
    with torch.no_grad():
        for idx in indices.tolist():
            data = collate([dataset[idx]])
            x = preprocessor(data, training=False)['inputs'] if preprocessor else data['inputs']
            samples.append(_fit(x.float().cpu(), tuple(shape)))
    return torch.cat(samples), indices.tolist()
