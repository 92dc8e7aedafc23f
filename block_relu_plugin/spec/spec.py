"""Block-ReLU spec files: per-site, per-channel patch sizes plus metadata.

The format is JSON (never pickle: specs are exchanged between parties and
users). One site per line keeps large specs diffable::

    {"format": "block_relu_spec", "version": 1,
     "metadata": {"model": "...", "input_size": [32, 32], "budget": 0.06, ...},
     "sites": {
      "backbone.relu": [[1, 1], [2, 2], [0, 1], ...],
      ...}}

Patch codes: ``[bh, bw]`` with ``[1, 1]`` = ReLU, ``[0, 1]`` = identity,
``[1, 0]`` = zero (see :mod:`block_relu_plugin.layers.block_relu`).
"""
import json
import os
import tempfile
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..conversion.sites import ReLUSite, count_relus
from ..layers.block_relu import RELU, BlockReLU, check_block_sizes

FORMAT = 'block_relu_spec'
VERSION = 1


class SpecError(ValueError):
    """A spec file or spec does not fit the model (names the site and problem)."""


class BlockReLUSpec:
    """Per-site ``(C, 2)`` patch sizes, in site order, with metadata.

    Args:
        sites: Mapping of site name to ``(C, 2)`` patch sizes.
        metadata: Free-form JSON-serialisable description (model, input
            size, budget, DReLU count, how it was produced).
    """

    def __init__(self, sites: Mapping[str, Sequence], metadata: Optional[dict] = None):
        self.sites: Dict[str, np.ndarray] = OrderedDict()
        for name, sizes in sites.items():
            try:
                self.sites[name] = check_block_sizes(sizes)
            except ValueError as e:
                raise SpecError(f'site {name!r}: {e}') from None
        self.metadata = dict(metadata or {})
        #: The file the spec was loaded from (named in errors), else None.
        self.source: Optional[str] = None

    # ------------------------------------------------------------------ build
    @classmethod
    def all_relu(cls, sites: Iterable[ReLUSite], **metadata) -> 'BlockReLUSpec':
        """Every channel of every site an ordinary ReLU (the identity conversion)."""
        return cls.uniform(sites, RELU, **metadata)

    @classmethod
    def uniform(cls, sites: Iterable[ReLUSite], block_size: Tuple[int, int],
                **metadata) -> 'BlockReLUSpec':
        """The same patch size for every channel of every site."""
        sites = list(sites)
        spec = cls({s.name: np.tile(np.asarray(block_size, np.int64), (s.channels, 1))
                    for s in sites})
        spec.metadata.update(method=f'uniform {tuple(block_size)}', **metadata)
        spec.describe(sites)
        return spec

    @classmethod
    def from_model(cls, model, sites: Iterable[ReLUSite], **metadata) -> 'BlockReLUSpec':
        """The patch sizes a built (converted or plain) model applies at ``sites``.

        What the model computes, whatever produced it (spec file, budget,
        ``partial``): a :class:`BlockReLU` site gives its sizes, an
        ``nn.ReLU`` site is all ReLU.
        """
        sizes = {}
        for s in sites:
            module = model.get_submodule(s.name)
            sizes[s.name] = (module.sizes_for(s.channels) if isinstance(module, BlockReLU)
                             else np.tile(np.asarray(RELU, np.int64), (s.channels, 1)))
        return cls(sizes, metadata)

    # ---------------------------------------------------------------- checks
    def validate(self, sites: Iterable[ReLUSite], partial: bool = False) -> None:
        """Check that the spec fits the sites of a model: the one check of a spec
        against a model, used by model building (:func:`convert_block_relu`) and
        by every tool (they build the model, or call this).

        Site names and channel counts do not depend on the input size, and a
        patch larger than the map is one patch spanning it, so only names and
        channel counts are checked here; patch sizes themselves are checked
        when the spec is made or loaded.

        Args:
            sites: The model's sites (see :func:`find_relu_sites`).
            partial: Allow model sites that the spec does not name (they
                stay ReLU; ``block_relu_cfg`` key ``partial``).

        Raises:
            SpecError: naming the spec file, the first unknown site, missing
                site or site with a wrong channel count, and the fix.
        """
        where = f'{self.source}: ' if self.source else ''
        by_name = {s.name: s for s in sites}
        for name, sizes in self.sites.items():
            site = by_name.get(name)
            if site is None:
                close = [n for n in by_name if n.split('.')[-1] == name.split('.')[-1]][:3]
                hint = f'; sites with that ending: {close}' if close else ''
                raise SpecError(f'{where}spec names site {name!r}, which the model does not '
                                f'have{hint} (make the spec for this model: tools/make_spec.py)')
            if sizes.shape[0] != site.channels:
                raise SpecError(f'{where}site {name!r}: spec has {sizes.shape[0]} channels, '
                                f'the model has {site.channels} (a spec of another width?)')
        if not partial:
            missing = [n for n in by_name if n not in self.sites]
            if missing:
                raise SpecError(f'{where}spec has no entry for {len(missing)} model site(s), '
                                f'first {missing[0]!r} (add them, or set block_relu_cfg '
                                'partial=True to keep them ReLU)')

    def drelus(self, sites: Iterable[ReLUSite]) -> Dict[str, int]:
        """DReLU count per site (sites the spec does not name count as ReLU)."""
        return {s.name: int(s.drelus(self.sites[s.name]).sum()) if s.name in self.sites
                else s.relus for s in sites}

    def describe(self, sites: Sequence[ReLUSite]) -> None:
        """Record the input size and the DReLU / ReLU counts in the metadata."""
        sites = list(sites)
        self.metadata['drelus'] = int(sum(self.drelus(sites).values()))
        self.metadata['relus'] = count_relus(sites)

    # ------------------------------------------------------------------- I/O
    def to_json(self) -> str:
        lines = [f'{{"format": "{FORMAT}", "version": {VERSION},',
                 f' "metadata": {json.dumps(self.metadata, sort_keys=True)},',
                 ' "sites": {']
        items = [f'  {json.dumps(name)}: {json.dumps(sizes.tolist(), separators=(",", ":"))}'
                 for name, sizes in self.sites.items()]
        lines.append(',\n'.join(items))
        lines.append(' }}')
        return '\n'.join(lines) + '\n'

    def save(self, path: str) -> None:
        """Write atomically: a crash never leaves a half-written spec behind."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.spec-', suffix='.json')
        try:
            with os.fdopen(fd, 'w') as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def from_json(cls, text: str, source: str = '<string>') -> 'BlockReLUSpec':
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f'{source}: not a JSON spec file ({e})') from None
        if not isinstance(data, dict) or data.get('format') != FORMAT:
            raise SpecError(f'{source}: not a block_relu_spec file '
                            '(missing "format": "block_relu_spec")')
        if data.get('version') != VERSION:
            raise SpecError(f'{source}: spec version {data.get("version")!r} is not '
                            f'supported (expected {VERSION})')
        sites, metadata = data.get('sites'), data.get('metadata', {})
        if not isinstance(sites, dict) or not isinstance(metadata, dict):
            raise SpecError(f'{source}: "sites" and "metadata" must be JSON objects')
        try:
            return cls(sites, metadata)
        except SpecError as e:
            raise SpecError(f'{source}: {e}') from None

    @classmethod
    def load(cls, path: str) -> 'BlockReLUSpec':
        path = os.fspath(path)
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f'cannot read spec file {path}: {e}') from None
        spec = cls.from_json(text, source=path)
        spec.source = path
        return spec

    def __eq__(self, other) -> bool:
        return (isinstance(other, BlockReLUSpec) and list(self.sites) == list(other.sites)
                and all(np.array_equal(a, other.sites[n]) for n, a in self.sites.items())
                and self.metadata == other.metadata)

    def __repr__(self) -> str:
        return (f'BlockReLUSpec({len(self.sites)} sites, '
                f'{sum(len(s) for s in self.sites.values())} channels)')
