"""First-order channel distortion for every site, channel and candidate at once.

Changing the output ``a`` of a site by ``delta`` changes the network output
``y`` by ``J delta`` to first order. For a Gaussian probe ``v`` on the output,
``E[(v . J delta)^2] = |J delta|^2``, and ``v . J delta = g . delta`` with
``g = d(v . y) / d a``, which one backward pass gives at every site. So the
distortion of candidate ``b`` on channel ``c`` (mean squared output change,
as :func:`.distortion.exact_distortion` measures it) is estimated by the mean
over samples and probes of::

    (sum over pixels of g_c * delta_{b,c})^2 / (number of output elements)

with ``delta_{b,c} = BlockReLU_b(x_c) - ReLU(x_c)`` computed locally from the
site input ``x``. Cost per batch: one forward and ``num_probes`` backward
passes, against ``sum over sites of C x K`` partial forwards for ``exact``.

Accuracy (:func:`magnitude_ratio`, ``tests/test_budget/test_sketch.py``,
``benchmarks/distortion.py``): over the probes the estimate is unbiased for
the first-order change ``J delta``, so it equals ``exact`` in expectation
where the rest of the network is linear in the site (the last ReLU before
pooling and the classifier: measured sketch / exact 0.97-1.01). Earlier, the
linearisation keeps every downstream ReLU gate as the unperturbed input set
it, while a perturbation flips some: on a trained tiny ResNet the per-site
median of sketch / exact grows from 0.99 (last site) to 1.2 (stem), on a
random ResNet18-CIFAR to 1.65 at 32x32; within a site it compresses the range
(the smallest distortions overestimated most, identity overestimated up to
2x, the zero code underestimated). The probe noise is a relative
``sqrt(2 / (samples x probes))`` per entry.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..conversion.sites import ReLUSite, find_relu_sites, run_tensor_forward
from ..conversion.split import split_reused_relus
from ..layers.block_relu import RELU, BlockReLU
from .candidates import default_candidates


class SketchState:
    """Block-ReLU modules kept across batches, so their index maps are built once."""

    def __init__(self):
        self.acts: Dict[tuple, BlockReLU] = {}

    def act(self, name: str, start: int, sizes: np.ndarray, channels: int,
            device: torch.device) -> BlockReLU:
        """Block-ReLU over ``channels x len(sizes)`` maps; map ``c * n + k`` gets ``sizes[k]``."""
        key = (name, start, len(sizes), device)
        if key not in self.acts:
            self.acts[key] = BlockReLU(np.tile(sizes, (channels, 1))).to(device)
        return self.acts[key]


def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The probe generator of one sample batch: independent of the ranks and of other batches."""
    state = np.random.SeedSequence([seed, batch_index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def sketch_batch(model: nn.Module,
                 x: Tensor,
                 sites: Sequence[ReLUSite],
                 candidates: Dict[str, np.ndarray],
                 num_probes: int,
                 generator: torch.Generator,
                 state: Optional[SketchState] = None,
                 candidate_chunk: int = 16) -> Dict[str, np.ndarray]:
    """Sketched distortions of one batch, summed over its samples.

    Args:
        model: The network (eval mode, ReLU sites split).
        x: ``b x C x H x W`` samples on the model's device.
        sites: The sites.
        candidates: Site name -> ``(K, 2)`` patch sizes.
        num_probes: Gaussian output probes per sample.
        generator: CPU generator of the probes.
        state: Block-ReLU cache shared by the batches of a run.
        candidate_chunk: Candidates evaluated together (memory vs speed).

    Returns:
        dict: site name -> ``(C, K)`` float64 sums over the batch's samples.
    """
    state = state or SketchState()
    modules = dict(model.named_modules())
    site_in: Dict[str, Tensor] = {}
    site_out: Dict[str, Tensor] = {}

    def pre_hook(name):
        def hook(module, args):
            site_in[name] = args[0].detach().clone()  # before an in-place ReLU
        return hook

    def post_hook(name):
        def hook(module, args, output):
            # A fresh tensor to differentiate against, never modified in place later.
            site_out[name] = output.clone()
            return site_out[name]
        return hook

    handles = []
    for s in sites:
        handles.append(modules[s.name].register_forward_pre_hook(pre_hook(s.name)))
        handles.append(modules[s.name].register_forward_hook(post_hook(s.name)))
    params = [p for p in model.parameters() if p.requires_grad]
    names = [s.name for s in sites]
    grads: Dict[str, List[Tensor]] = {n: [] for n in names}
    try:
        for p in params:  # no weight gradients
            p.requires_grad_(False)
        with torch.enable_grad():
            out = run_tensor_forward(model, x.detach().requires_grad_(True))
            outputs = [site_out[n] for n in names]
            for q in range(num_probes):
                v = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
                gs = torch.autograd.grad(out, outputs, v, retain_graph=q < num_probes - 1,
                                         allow_unused=True)
                for n, g in zip(names, gs):
                    grads[n].append(g)
        elements = out[0].numel()
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.requires_grad_(True)
    del out, outputs
    site_out.clear()

    result = {}
    for s in sites:
        cand = np.asarray(candidates[s.name], dtype=np.int64).reshape(-1, 2)
        xs = site_in.pop(s.name)
        b, C = xs.shape[:2]
        h, w = (s.height, s.width) if xs.dim() == 4 else (1, 1)
        L = h * w
        acc = np.zeros((C, len(cand)))
        if any(g is None for g in grads[s.name]):  # the site does not reach the output
            result[s.name] = acc
            continue
        # (b, C, Q, L): per sample and channel, the probes' gradients as rows.
        G = torch.stack(grads.pop(s.name)).reshape(num_probes, b, C, L).permute(1, 2, 0, 3)
        for k0 in range(0, len(cand), candidate_chunk):
            sizes = cand[k0:k0 + candidate_chunk]
            n = len(sizes)
            act = state.act(s.name, k0, sizes, C, xs.device)
            xr = xs.reshape(b, C, 1, L).expand(b, C, n, L).reshape(b, C * n, h, w)
            delta = (act(xr) - F.relu(xr)).reshape(b, C, n, L)
            dots = torch.matmul(G, delta.transpose(2, 3))  # (b, C, Q, n)
            acc[:, k0:k0 + n] = (dots.double().square().mean(dim=2).sum(dim=0).cpu().numpy()
                                 / elements)
        result[s.name] = acc
    return result


def sketch_distortion(model: nn.Module,
                      inputs: Tensor,
                      sites: Optional[Sequence[ReLUSite]] = None,
                      candidates=default_candidates,
                      batch_size: int = 8,
                      num_probes: int = 8,
                      seed: int = 0) -> Dict[str, np.ndarray]:
    """In-memory sketched distortions (what ``extract_distortion(method='sketch')`` writes).

    Args:
        model: The network.
        inputs: ``N x C x H x W`` samples.
        sites: Sites to estimate (default: all).
        candidates: ``(H, W) -> (K, 2)`` candidates, or a dict site name -> ``(K, 2)``.
        batch_size: Samples per forward.
        num_probes: Gaussian probes per sample.
        seed: Probe seed.

    Returns:
        dict: site name -> ``(C, K)`` float64 distortions.
    """
    was_training = model.training
    model.eval()
    split_reused_relus(model)
    try:
        if sites is None:
            sites = find_relu_sites(model, tuple(inputs.shape[2:]), in_channels=inputs.shape[1])
        cands = candidates if isinstance(candidates, dict) else {
            s.name: candidates(s.height, s.width) for s in sites}
        device = next(model.parameters()).device
        state = SketchState()
        total = None
        for i, start in enumerate(range(0, len(inputs), batch_size)):
            sums = sketch_batch(model, inputs[start:start + batch_size].to(device), sites, cands,
                                num_probes, batch_generator(seed, i), state)
            total = sums if total is None else {n: total[n] + sums[n] for n in sums}
        return {n: v / len(inputs) for n, v in total.items()}
    finally:
        model.train(was_training)


def rank_agreement(reference: Dict[str, np.ndarray],
                   estimate: Dict[str, np.ndarray],
                   candidates: Optional[Dict[str, np.ndarray]] = None) -> dict:
    """Spearman rank correlation of two distortion tables, per site and pooled.

    The ReLU candidate ``(1, 1)`` (0 in both by construction) is left out when
    ``candidates`` is given, so it does not inflate the agreement.

    Args:
        reference: Site name -> ``(n, K)`` distortions (e.g. ``exact``).
        estimate: Site name -> ``(n, K)`` distortions of the same entries.
        candidates: Site name -> ``(K, 2)`` patch sizes.

    Returns:
        dict with ``sites`` (name -> rho), ``pooled`` (all entries together,
        the ranking the knapsack trades across sites), ``median`` and ``min``
        of the per-site values.
    """
    from scipy.stats import spearmanr
    per_site, all_ref, all_est = {}, [], []
    for name, ref in reference.items():
        est = estimate[name]
        keep = np.ones(ref.shape, dtype=bool)
        if candidates is not None:
            relu = np.all(np.asarray(candidates[name]) == RELU, axis=1)
            keep[:, relu] = False
        r, e = ref[keep], est[keep]
        per_site[name] = float(spearmanr(r, e)[0]) if len(r) > 1 else float('nan')
        all_ref.append(r)
        all_est.append(e)
    pooled = float(spearmanr(np.concatenate(all_ref), np.concatenate(all_est))[0])
    values = np.array([v for v in per_site.values() if np.isfinite(v)])
    return dict(sites=per_site, pooled=pooled,
                median=float(np.median(values)) if len(values) else float('nan'),
                min=float(values.min()) if len(values) else float('nan'))


def magnitude_ratio(reference: Dict[str, np.ndarray],
                    estimate: Dict[str, np.ndarray],
                    candidates: Dict[str, np.ndarray],
                    per_candidate: bool = False) -> dict:
    """How large the estimate is against the reference: sketch / exact, per site.

    Entries where the reference is 0 (the ReLU candidate, channels that never
    reach the output) are left out.

    Args:
        reference: Site name -> ``(n, K)`` distortions (e.g. ``exact``).
        estimate: Site name -> ``(n, K)`` distortions of the same entries.
        candidates: Site name -> ``(K, 2)`` patch sizes.
        per_candidate: Also give, per site, the median over channels of each
            candidate.

    Returns:
        dict with ``sites`` (name -> median over channels x candidates of the
        ratio), ``median`` and ``min`` / ``max`` of those, ``sums`` (name ->
        ratio of the sums) and, with ``per_candidate``, ``candidates`` (name ->
        {(bh, bw): median ratio}).
    """
    per_site, sums, per_cand = {}, {}, {}
    for name, ref in reference.items():
        est = estimate[name]
        cand = np.asarray(candidates[name]).reshape(-1, 2)
        valid = (ref > 0) & ~np.all(cand == RELU, axis=1)[None, :]
        if not valid.any():
            continue
        ratio = np.where(valid, est / np.where(valid, ref, 1.0), np.nan)
        per_site[name] = float(np.nanmedian(ratio))
        sums[name] = float(est[valid].sum() / ref[valid].sum())
        if per_candidate:
            per_cand[name] = {tuple(int(v) for v in cand[k]): float(np.nanmedian(ratio[:, k]))
                              for k in range(len(cand)) if valid[:, k].any()}
    values = np.array(list(per_site.values()))
    out = dict(sites=per_site, sums=sums,
               median=float(np.median(values)) if len(values) else float('nan'),
               min=float(values.min()) if len(values) else float('nan'),
               max=float(values.max()) if len(values) else float('nan'))
    if per_candidate:
        out['candidates'] = per_cand
    return out


def validate_sketch(model: nn.Module,
                    inputs: Tensor,
                    sketch,
                    channels_per_site: int = 4,
                    seed: int = 0,
                    batch_size: int = 8,
                    forward_batch: int = 512,
                    threshold: float = 0.5,
                    progress: bool = False) -> dict:
    """Check sketched distortions against ``exact`` on a random sample of channels.

    Args:
        model: The network the sketch was taken of.
        inputs: Samples for ``exact`` (ideally the sketch's own).
        sketch: A :class:`.distortion.Distortion` (e.g. ``load_distortion(DIR)``).
        channels_per_site: Channels drawn per site (all when fewer).
        seed: Seed of the channel draw.
        batch_size: ``exact``: samples per forward.
        forward_batch: ``exact``: copies x samples per forward.
        threshold: Sites whose Spearman rho is below it are listed in ``disagree``.
        progress: tqdm bar over the sites.

    Returns:
        dict: :func:`rank_agreement` plus ``magnitude`` (:func:`magnitude_ratio`),
        ``channels`` (site -> channels drawn), ``disagree`` (sites below
        ``threshold``) and ``exact`` / ``sketch`` (site -> ``(n, K)`` values
        compared).
    """
    from tqdm import tqdm

    from .distortion import exact_distortion, find_expansion_point, reference_outputs
    rng = np.random.default_rng(seed)
    model.eval()
    reference = reference_outputs(model, inputs, batch_size)
    channels, exact, est = {}, {}, {}
    for site in tqdm(sketch.sites, desc='validate sketch', disable=not progress):
        n = min(channels_per_site, site.channels)
        chosen = np.sort(rng.choice(site.channels, n, replace=False))
        channels[site.name] = chosen.tolist()
        expansion = find_expansion_point(model, site, inputs)
        exact[site.name] = exact_distortion(model, inputs, site, chosen,
                                            sketch.candidates[site.name], batch_size,
                                            forward_batch, expansion, reference)
        est[site.name] = sketch.values[site.name][chosen]
    report = rank_agreement(exact, est, sketch.candidates)
    report.update(magnitude=magnitude_ratio(exact, est, sketch.candidates),
                  channels=channels, exact=exact, sketch=est,
                  disagree=sorted(n for n, r in report['sites'].items()
                                  if not r >= threshold))
    return report
