"""Create the CA and the client/server/helper certificates for the MPC parties.

Usage: python tools/mpc_certs.py OUT_DIR [--hosts HOST ...] [--days N]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from block_relu_plugin.mpc.certs import generate_certs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir')
    parser.add_argument('--hosts', nargs='*', default=None,
                        help='DNS names / IPs added to every party certificate '
                        '(default 127.0.0.1 localhost)')
    parser.add_argument('--days', type=int, default=30)
    args = parser.parse_args(argv)
    paths = generate_certs(args.out_dir, args.hosts, args.days)
    for name, path in sorted(paths.items()):
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()
