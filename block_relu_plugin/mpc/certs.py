"""Certificates for the parties' mutual TLS: one CA and one certificate per party.

``generate_certs(out_dir, hosts)`` writes ``ca.pem`` (the CA certificate every
party trusts), ``ca.key`` (keep it offline or delete it after issuing),
and ``<role>.pem`` / ``<role>.key`` for ``client``, ``server`` and ``helper``.
Each party certificate has the role as its common name and as a DNS
subject-alternative name (peers are verified by role name, not by address),
plus the given hosts (DNS names or IP addresses). Keys are ECDSA P-256.
Deploy to each party its own key, its certificate and ``ca.pem``.
"""
import datetime
import ipaddress
import os
from typing import Dict, Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ('client', 'server', 'helper')


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: str, key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)


def _write_cert(path: str, cert) -> None:
    with open(path, 'wb') as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _san(role: str, hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names = [x509.DNSName(role)]
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def generate_certs(out_dir: str, hosts: Optional[Iterable[str]] = None,
                   days: int = 30) -> Dict[str, str]:
    """Create a CA and a certificate + key per party in ``out_dir``.

    Args:
        out_dir: Output directory (created if missing).
        hosts: Extra DNS names / IP addresses for every party certificate
            (default ``127.0.0.1`` and ``localhost``).
        days: Validity period.

    Returns:
        dict: ``{'ca': path, '<role>': cert path, '<role>_key': key path}``.
    """
    hosts = list(hosts) if hosts is not None else ['127.0.0.1', 'localhost']
    os.makedirs(out_dir, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name('block-relu-mpc-ca'))
               .issuer_name(_name('block-relu-mpc-ca')).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    paths = {'ca': os.path.join(out_dir, 'ca.pem')}
    _write_cert(paths['ca'], ca_cert)
    _write_key(os.path.join(out_dir, 'ca.key'), ca_key)
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(role)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(_san(role, hosts), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths[role] = os.path.join(out_dir, f'{role}.pem')
        paths[f'{role}_key'] = os.path.join(out_dir, f'{role}.key')
        _write_cert(paths[role], cert)
        _write_key(paths[f'{role}_key'], key)
    return paths


def cert_paths(cert_dir: str, role: str) -> Dict[str, str]:
    """The files one party needs: its cert, its key and the CA certificate."""
    return {'ca': os.path.join(cert_dir, 'ca.pem'),
            'cert': os.path.join(cert_dir, f'{role}.pem'),
            'key': os.path.join(cert_dir, f'{role}.key')}
