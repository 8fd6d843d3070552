"""The lab's TLS: one throwaway CA and one server certificate (SAN 127.0.0.1 and localhost)
shared by every server, made with openssl at `up` when missing. The CA's key is deleted right
after signing: nothing else is ever signed with it, and a lost certificate is simply made again
(with a new CA, and the servers reloaded/restarted by `up`)."""

import os
import shutil
import subprocess
import tempfile

from .common import die, log

TLS_DAYS = 3650


def tls_ready(tls_dir):
    return all(os.path.isfile(p) and os.path.getsize(p) > 0
               for p in (f"{tls_dir}/ca.pem", f"{tls_dir}/server.pem", f"{tls_dir}/server.key"))


def ensure_tls(lab_dir, tls_dir, log_path, owner):
    """Makes the CA and server certificate when missing; True when it made new ones."""
    if tls_ready(tls_dir):
        return False
    log(f"tls: creating a throwaway CA and a server certificate for 127.0.0.1/localhost in {tls_dir}")
    tmp = tempfile.mkdtemp(prefix=".tls.", dir=lab_dir)
    steps = [
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-sha256",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", str(TLS_DAYS), "-subj", "/CN=rolegate lab CA (throwaway)",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-sha256",
         "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-sha256", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", str(TLS_DAYS), "-extfile", "server.ext", "-out", "server.pem"],
    ]
    with open(os.path.join(tmp, "server.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    try:
        with open(log_path, "a") as logf:
            for argv in steps:
                if subprocess.run(argv, cwd=tmp, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL).returncode != 0:
                    die(f"openssl could not make the lab's certificates (see {log_path})")
        shutil.rmtree(tls_dir, ignore_errors=True)
        owner.mkdir(tls_dir, 0o755)
        owner.install(f"{tmp}/ca.pem", f"{tls_dir}/ca.pem", 0o644)
        owner.install(f"{tmp}/server.pem", f"{tls_dir}/server.pem", 0o644)
        # PostgreSQL refuses a key file that others can read.
        owner.install(f"{tmp}/server.key", f"{tls_dir}/server.key", 0o600)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)    # with ca.key
    return True
