"""Create the CA and the client/server/helper certificates for the MPC parties.

Usage: python tools/mpc_certs.py OUT_DIR --server HOST [HOST ...] --helper HOST [HOST ...]
                                 [--client HOST ...] [--days N]

Each role gets its own host names / IP addresses: the ones its peers dial it
by (the server's and the helper's ``host`` in the parties JSON). Writes
OUT_DIR/<role>/ (ca.pem, <role>.pem, <role>.key: hand each party its own
directory, nothing else) and OUT_DIR/ca/ (ca.pem, ca.key: the CA key stays
with whoever runs this tool; delete it when no more certificates are needed).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from block_relu_plugin.mpc.certs import ROLES, generate_certs  # noqa: E402
from block_relu_plugin.utils.cli import ArgumentParser, positive_int, run_cli  # noqa: E402


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument('out_dir', help='directory to write (one folder per role and ca/)')
    for role in ROLES:
        parser.add_argument(f'--{role}', nargs='+', default=[], metavar='HOST',
                            help=f'DNS names / IPs of the {role} machine'
                            + (' (optional: nobody dials the client)' if role == 'client'
                               else ' (required)'))
    parser.add_argument('--hosts', nargs='*', help=argparse.SUPPRESS)
    parser.add_argument('--days', type=positive_int, default=30,
                        help='validity of the certificates in days')
    args = parser.parse_args(argv)
    if args.hosts is not None:
        parser.error('--hosts was removed: it put the same names in every party\'s '
                     'certificate; give each role its own: --server HOST --helper HOST '
                     '[--client HOST]')
    try:
        paths = generate_certs(args.out_dir, {r: getattr(args, r) for r in ROLES}, args.days)
    except ValueError as e:
        parser.error(str(e))
    for role in ROLES:
        print(f'{role}: give {paths[f"{role}_dir"]}/ to the {role} (its cert_dir)')
    print(f'CA key: {paths["ca_key"]} (keep it off the parties; delete it when done)')


if __name__ == '__main__':
    run_cli(main, 'mpc_certs.py')
