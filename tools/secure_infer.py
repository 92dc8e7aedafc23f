"""Secure 3-party inference of a config's model on its test data, all parties local.

Starts the client, server and helper as separate processes (mutual TLS over
127.0.0.1), runs the test images (the test dataloader's dataset through its
pipeline and the model's data preprocessor, or --images files) and reports
accuracy or mIoU, agreement with the plaintext model, bytes (session /
offline / online, per party) and the client's time per image.

Example:
    python tools/secure_infer.py CONFIG CHECKPOINT --spec spec.json --bits 16 --num-images 10
"""
import argparse
import json

from block_relu_plugin.mpc.infer import load_test_inputs, secure_inference
from block_relu_plugin.utils.config import build_model, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='mmpretrain or mmseg config file')
    parser.add_argument('checkpoint', help='model weights (used by the server party only)')
    parser.add_argument('--spec', help='Block-ReLU spec file (replaces the config\'s)')
    parser.add_argument('--bits', type=int, default=64,
                        help='compared bits of the Block-ReLU sites\' DReLUs (default 64)')
    parser.add_argument('--relu-bits', type=int, default=64)
    parser.add_argument('--pool-bits', type=int, default=64)
    parser.add_argument('--num-images', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--images', nargs='+', help='image files instead of the test dataset')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per party')
    parser.add_argument('--json-out', help='write the full report here')
    return parser.parse_args(argv)


def summary(res) -> dict:
    """The JSON-able part of a :func:`secure_inference` result."""
    keep = ('task', 'num_images', 'batch_size', 'options', 'agreement', 'max_logit_error',
            'accuracy', 'plain_accuracy', 'miou', 'plain_miou', 'bytes', 'layers', 'rounds',
            'time', 'predicted_equal')
    out = {k: res[k] for k in keep if k in res}
    out['predictions'] = [p.tolist() for p in res['predictions']] \
        if res['task'] == 'classification' else None
    out['predicted'] = res['predicted'].to_dict()['total']
    return out


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    model = build_model(cfg, spec=args.spec, checkpoint=args.checkpoint)
    images, labels = load_test_inputs(cfg, model, args.num_images, args.images)
    res = secure_inference(model, images=images, labels=labels, bits=args.bits,
                           relu_bits=args.relu_bits, pool_bits=args.pool_bits,
                           batch_size=args.batch_size, party_threads=args.threads)
    out = summary(res)
    b, t = res['bytes'], res['time']
    print(f'{res["num_images"]} image(s), task {res["task"]}, options {res["options"]}')
    for key in ('accuracy', 'plain_accuracy', 'miou', 'plain_miou'):
        if key in res:
            print(f'{key}: {res[key]:.2f}')
    print(f'agreement with the plaintext model: {res["agreement"] * 100:.2f} % '
          f'(max |logit error| {res["max_logit_error"]:.4g})')
    print(f'bytes per image: online {b["per_image"]["online"]:,.0f}, offline '
          f'{b["per_image"]["offline"]:,.0f}, once per session {b["session"]:,}')
    for role, parts in b['per_party'].items():
        print(f'  {role}: ' + ', '.join(f'{k} {v:,}' for k, v in parts.items()))
    print(f'time per image (client): online {t["online_per_image"]:.3f} s, offline '
          f'{t["offline_per_image"]:.3f} s; cost model matches meters: {res["predicted_equal"]}')
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()
