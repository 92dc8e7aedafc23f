"""Certificates for the parties' mutual TLS: one CA and one certificate per party.

``generate_certs(out_dir, hosts)`` writes::

    out_dir/ca/ca.key                 the CA's private key: keep it off the parties
    out_dir/ca/ca.pem                 (delete it, or keep it offline to issue again)
    out_dir/<role>/ca.pem             one bundle per party, for client, server and helper:
    out_dir/<role>/<role>.pem         what that party (and only it) receives
    out_dir/<role>/<role>.key

Each party certificate names its role twice, as its common name and as the URI
subject-alternative name ``urn:block-relu:role:<role>`` (:func:`cert_role`
reads them; both sides of every connection check the peer's role), plus that
role's own host names / IP addresses, which the dialing party checks against
the address it dialed. Keys are ECDSA P-256, written 0600 in 0700 directories.
"""
import datetime
import ipaddress
import os
from typing import Dict, Iterable, Mapping, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ('client', 'server', 'helper')
ROLE_URI = 'urn:block-relu:role:'
CA_DIR = 'ca'


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _private_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)  # makedirs' mode is filtered by the umask and skips existing dirs


def _write(path: str, data: bytes, mode: int) -> None:
    # O_CREAT's mode applies only to a new file: fchmod sets it on an existing one
    # too, before any new content is written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as f:
            fd = None
            f.write(data)
    finally:
        if fd is not None:
            os.close(fd)


def _write_key(path: str, key) -> None:
    _write(path, key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)


def _write_cert(path: str, cert) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _san(role: str, hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names = [x509.UniformResourceIdentifier(ROLE_URI + role)]
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _check_hosts(hosts: Mapping[str, Iterable[str]]) -> Dict[str, list]:
    if not isinstance(hosts, Mapping):
        raise TypeError('hosts must map each role to its own names, e.g. '
                        "{'server': ['10.0.0.2'], 'helper': ['10.0.0.3']}")
    unknown = set(hosts) - set(ROLES)
    if unknown:
        raise ValueError(f'unknown role(s) {sorted(unknown)} in hosts (roles: {ROLES})')
    out = {r: [str(h) for h in hosts.get(r, ())] for r in ROLES}
    for r in ('server', 'helper'):  # the parties that are dialed need a name to be checked
        if not out[r]:
            raise ValueError(f'no host name or address for the {r}: give the one its '
                             f'peers dial (tools/mpc_certs.py --{r} HOST)')
    for r, names in out.items():
        for h in names:
            if not h or h.startswith(ROLE_URI):
                raise ValueError(f'bad host name {h!r} for the {r}')
    return out


def generate_certs(out_dir: str, hosts: Mapping[str, Iterable[str]],
                   days: int = 30) -> Dict[str, str]:
    """Create a CA and a certificate + key per party under ``out_dir``.

    Args:
        out_dir: Output directory (created if missing, made 0700).
        hosts: ``{role: [DNS names / IP addresses]}``: the names each party's
            peers dial it by; required for the server and the helper (who
            listen), optional for the client. One machine running several
            parties may appear under several roles: the role fields, not the
            host names, tell the parties apart.
        days: Validity period.

    Returns:
        dict: ``{'ca': CA cert, 'ca_key': CA key, '<role>': cert, '<role>_key':
        key, '<role>_dir': the directory to hand to that party}``.
    """
    hosts = _check_hosts(hosts)
    if days <= 0:
        raise ValueError(f'days must be positive, got {days}')
    _private_dir(out_dir)
    _remove_flat_layout(out_dir)
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
    ca_dir = os.path.join(out_dir, CA_DIR)
    _private_dir(ca_dir)
    paths = {'ca': os.path.join(ca_dir, 'ca.pem'), 'ca_key': os.path.join(ca_dir, 'ca.key')}
    _write_cert(paths['ca'], ca_cert)
    _write_key(paths['ca_key'], ca_key)
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(role)).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(_san(role, hosts[role]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        role_dir = os.path.join(out_dir, role)
        _private_dir(role_dir)
        files = _bundle(role_dir, role)
        _write_cert(files['ca'], ca_cert)
        _write_cert(files['cert'], cert)
        _write_key(files['key'], key)
        paths.update({role: files['cert'], f'{role}_key': files['key'], f'{role}_dir': role_dir})
    return paths


def _remove_flat_layout(out_dir: str) -> None:
    """Delete files an older version of this tool wrote directly in ``out_dir``
    (including the CA key), so that no stale key or certificate is picked up."""
    for name in ['ca.pem', 'ca.key'] + [f'{r}.{e}' for r in ROLES for e in ('pem', 'key')]:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.remove(path)


def _bundle(directory: str, role: str) -> Dict[str, str]:
    return {'ca': os.path.join(directory, 'ca.pem'),
            'cert': os.path.join(directory, f'{role}.pem'),
            'key': os.path.join(directory, f'{role}.key')}


def cert_paths(cert_dir: str, role: str) -> Dict[str, str]:
    """The files one party needs: its cert, its key and the CA certificate.

    ``cert_dir`` is either that party's own bundle (``ca.pem``, ``<role>.pem``,
    ``<role>.key``) or the directory ``generate_certs`` wrote, where the
    bundle is ``cert_dir/<role>/`` (all parties on one machine).
    """
    for d in (cert_dir, os.path.join(cert_dir, role)):
        files = _bundle(d, role)
        if os.path.isfile(files['cert']):
            missing = [p for p in files.values() if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f'{role}: {missing[0]} is missing (a party needs '
                                        f'ca.pem, {role}.pem and {role}.key)')
            return files
    raise FileNotFoundError(f'no certificate for the {role} in {cert_dir} (expected '
                            f'{role}.pem there or in {role}/; make them with tools/mpc_certs.py)')


def cert_role(cert: Optional[dict]) -> str:
    """The role a verified peer certificate (``SSLSocket.getpeercert()``) was
    issued for, or '' when it names none, several, or disagreeing ones."""
    if not cert:
        return ''
    uris = [v for k, v in cert.get('subjectAltName', ()) if k == 'URI' and v.startswith(ROLE_URI)]
    cns = [v for rdn in cert.get('subject', ()) for k, v in rdn if k == 'commonName']
    if len(uris) != 1:
        return ''
    role = uris[0][len(ROLE_URI):]
    return role if role in ROLES and cns == [role] else ''
