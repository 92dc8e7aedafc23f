"""Run one party of the 3-party secure inference, e.g. on its own machine.

Every party builds the (public) architecture and spec from the config; only
the server loads the checkpoint. Start the server and helper first; the
addresses and certificates are in the parties JSON (see
``block_relu_plugin.mpc.launch``; certificates from ``tools/mpc_certs.py``).
The client uses the config's test data (or --images); the server and the
helper need the input shape (--shape), which is public. The number of images,
the batch size and the compile options (--bits, --relu-bits, --pool-bits,
--spec) are public too and must be the same at all three parties.

Below 64 compared bits every comparison site needs a pre-shift that fits its
values (block_relu_plugin/mpc/calibrate.py). The server calibrates on training
images and writes the per-site shifts (public, like the spec: no measured
ranges) to --shifts-out; the client and the helper compile with --shifts FILE.

A party that cannot reach its peers within the parties JSON's
``connect_timeout``, or whose peer dies, aborts or stays silent for
``timeout`` seconds, exits with status 1 and a one-line error.

Example (three shells / machines):
    python tools/mpc_party.py --role server --config parties.json CONFIG CKPT --shape 32 32
    python tools/mpc_party.py --role helper --config parties.json CONFIG --shape 32 32
    python tools/mpc_party.py --role client --config parties.json CONFIG --num-images 10
"""
import json
import os
import sys

from block_relu_plugin.utils.cli import (ArgumentParser, compared_bits, check_files,
                                         margin, positive_int, run_cli)


def parse_args(argv=None):
    """The options, checked together (files, role rules, the parties JSON) before any work."""
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('--role', required=True, choices=('client', 'server', 'helper'),
                        help='this party')
    parser.add_argument('--config', required=True, dest='parties',
                        help='parties JSON (addresses, cert_dir, timeout, connect_timeout, '
                        'frac_bits)')
    parser.add_argument('model_config',
                        help='mmpretrain or mmseg config file')
    parser.add_argument('checkpoint', nargs='?',
                        help='weights (server only)')
    parser.add_argument('--spec',
                        help='Block-ReLU spec file (default: the config\'s)')
    parser.add_argument('--bits', type=compared_bits, default=64,
                        help='compared bits of Block-ReLU DReLUs, 2..64 (64: exact)')
    parser.add_argument('--relu-bits', type=compared_bits, default=64,
                        help='same for plain ReLU sites')
    parser.add_argument('--pool-bits', type=compared_bits, default=64,
                        help='same for MaxPool comparisons')
    parser.add_argument('--shifts',
                        help='below 64 bits: the per-site shifts JSON written by the '
                        "server's --shifts-out (client, helper; the server may reuse one)")
    parser.add_argument('--shifts-out', default='site_shifts.json',
                        help='server, below 64 bits: where to write the calibrated per-site '
                        'shifts for the other parties')
    parser.add_argument('--calibration-images', type=positive_int, default=256,
                        help='server, below 64 bits: training images to calibrate on')
    parser.add_argument('--margin', type=margin, default=4.0,
                        help='server, below 64 bits: compared range / calibrated range (>= 1)')
    parser.add_argument('--num-images', type=positive_int, default=10,
                        help='images to run (the same at all three parties)')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='images per protocol run (the same at all three parties)')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        help='input size (required for the server and helper; the client '
                        'checks it)')
    parser.add_argument('--images', nargs='+', metavar='IMAGE',
                        help='client: image files instead of the test data')
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='torch threads (default: torch\'s)')
    parser.add_argument('--json-out', help='write this party\'s report here (the client\'s '
                        'also has the predictions and, for classification, the logits)')
    args = parser.parse_args(argv)
    check_files(parser, args, 'parties', 'model_config', 'checkpoint', 'spec', 'shifts', 'images')
    if args.role == 'server' and not args.checkpoint:
        parser.error('the server needs the checkpoint')
    if args.role != 'server' and args.checkpoint:
        parser.error('only the server may load the checkpoint')
    if args.role != 'client' and not args.shape:
        parser.error('--shape H W is required for the server and the helper')
    if args.role != 'client' and args.images:
        parser.error('--images is for the client only')
    below = min(args.bits, args.relu_bits, args.pool_bits) < 64
    if below and args.role != 'server' and not args.shifts:
        parser.error('below 64 bits the client and the helper need --shifts FILE: the '
                     "per-site shifts the server wrote with --shifts-out")
    for path, opt in ((args.json_out, '--json-out'),
                      (args.shifts_out if below and args.role == 'server' else None,
                       '--shifts-out')):
        if path and not os.path.isdir(os.path.dirname(path) or '.'):
            parser.error(f'{opt}: no such directory: {os.path.dirname(path)}')
    try:
        with open(args.parties) as f:
            args.parties = json.load(f)
    except ValueError as e:
        parser.error(f'--config {args.parties}: not a JSON file ({e})')
    if not isinstance(args.parties, dict) or 'cert_dir' not in args.parties:
        parser.error('--config: the parties JSON needs a "cert_dir" (see '
                     'block_relu_plugin/mpc/launch.py)')
    if not os.path.isdir(args.parties['cert_dir']):
        parser.error(f'--config: cert_dir {args.parties["cert_dir"]} is not a directory '
                     '(make it with tools/mpc_certs.py)')
    return args


def _site_shifts(args, cfg, model, frac_bits):
    """Below 64 bits: the per-site shifts (read from --shifts, or calibrated
    by the server and written to --shifts-out); None at 64 bits."""
    if min(args.bits, args.relu_bits, args.pool_bits) == 64:
        return None, None
    if args.shifts:
        with open(args.shifts) as f:
            try:
                shifts = json.load(f)
            except ValueError:
                shifts = None
        if not isinstance(shifts, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in shifts.values()):
            raise ValueError(f'--shifts {args.shifts}: expected a JSON object {{site: shift}}')
        return shifts, None
    from block_relu_plugin.budget.distortion import load_samples
    from block_relu_plugin.mpc.calibrate import measure_ranges
    images, _ = load_samples(cfg, model, args.calibration_images, seed=0,
                             shape=tuple(args.shape))
    return None, measure_ranges(model, images)


def main(argv=None):
    args = parse_args(argv)
    # heavy imports after the options are checked: a bad option answers at once
    import torch
    from block_relu_plugin.mpc import PeerError, open_session
    from block_relu_plugin.mpc.compiler import compile_model
    from block_relu_plugin.mpc.cost import Cost
    from block_relu_plugin.mpc.infer import load_test_inputs, measured_costs, run_party
    from block_relu_plugin.utils.config import build_model, default_input_size, load_config
    cfg = load_config(args.model_config)
    model = build_model(cfg, spec=args.spec, checkpoint=args.checkpoint)
    parties = args.parties
    frac_bits = int(parties.get('frac_bits', 12))
    shifts, calibration = _site_shifts(args, cfg, model, frac_bits)
    # same uid at every party: the weights' session keys match by name
    program = compile_model(model, bits=args.bits, relu_bits=args.relu_bits,
                            pool_bits=args.pool_bits, frac_bits=frac_bits,
                            with_weights=args.role == 'server', uid='party',
                            calibration=calibration, margin=args.margin, site_shifts=shifts,
                            trace_size=tuple(args.shape) if args.shape
                            else default_input_size(cfg))
    if calibration is not None:
        with open(args.shifts_out, 'w') as f:
            json.dump(program.options['site_shifts'], f, indent=1)
        print(f'server: per-site shifts written to {args.shifts_out}: give it to the client '
              'and the helper (--shifts)', file=sys.stderr, flush=True)
    n, bs = args.num_images, args.batch_size
    if args.role == 'client':
        images, labels = load_test_inputs(cfg, model, n, args.images)
        if images.shape[0] != n:
            raise ValueError(f'the client has {images.shape[0]} image(s), not --num-images {n} '
                             '(the server and the helper run --num-images)')
        if args.shape and tuple(images.shape[2:]) != tuple(args.shape):
            raise ValueError(f'inputs are {tuple(images.shape[2:])}, not --shape {args.shape}')
        batches = [images[i:i + bs] for i in range(0, images.shape[0], bs)]
    else:
        c = program.options['in_channels']
        batches = [(min(bs, n - i), c) + tuple(args.shape) for i in range(0, n, bs)]
    try:
        with open_session(args.role, parties) as sess:
            print(f'{args.role}: connected', file=sys.stderr, flush=True)
            res = run_party(sess, program, batches, args.threads,
                            progress=args.role == 'client')
    except (PeerError, FileNotFoundError) as e:  # a peer is unreachable, died, aborted or
        raise SystemExit(f'error: {e}') from None  # timed out; or a certificate is missing
    records = res['handshake'] + [r for batch in res['records'] for r in batch]
    sent = measured_costs({args.role: records})
    total = sum(sent.values(), Cost())
    report = {'role': args.role,
              'sent': {f'{p}:{s}->{d}': v for (p, s, d), v in sorted(total.parts.items())},
              'time_per_batch': res['times']}
    if args.role == 'client':
        logits = torch.cat(res['logits'])
        preds = [program.postprocess(logits[i:i + 1],
                                     None if labels is None or program.task != 'segmentation'
                                     else tuple(labels[i].shape[-2:]))[0]
                 for i in range(logits.shape[0])]
        if labels is not None and program.task == 'classification':
            report['accuracy'] = float(sum(int(p) == int(t) for p, t in zip(preds, labels))
                                       / len(preds) * 100)
        elif labels is not None:
            from block_relu_plugin.mpc.infer import segmentation_miou
            report['miou'] = segmentation_miou(preds, labels, logits.shape[1])
        cls = program.task == 'classification'
        report['predictions'] = [p.tolist() for p in preds] if cls else None
        report['logits'] = logits.tolist() if cls else None
    print(json.dumps({k: v for k, v in report.items() if k not in ('predictions', 'logits')},
                     indent=1))
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    run_cli(main, 'mpc_party.py')
