"""Debian packages the engines need, installed with apt-get without starting their services."""

import os
import shutil
import subprocess
import sys
import tempfile

from . import common
from .common import die, log


POLICY_RC = "/usr/sbin/policy-rc.d"
APT_LOG = "/tmp/rolegate-lab-apt.log"


def ensure_packages(missing):
    """Installs the Debian packages MISSING() lists with apt-get, keeping their default services
    from starting (a policy-rc.d that exits 101, put back as it was afterwards)."""
    pkgs = missing()
    if not pkgs:
        return
    if os.geteuid() != 0:
        die(f"missing {' '.join(pkgs)}; run as root to install them")
    if not shutil.which("apt-get"):
        die(f"missing {' '.join(pkgs)} and no apt-get to install them")
    log(f"installing {' '.join(pkgs)} (apt-get; default services are kept from starting)")
    backup = None
    if os.path.exists(POLICY_RC):
        fd, backup = tempfile.mkstemp(prefix="policy-rc.d.", dir="/tmp")
        os.close(fd)
        shutil.copy2(POLICY_RC, backup)
    try:
        with open(POLICY_RC, "w") as f:
            f.write("#!/bin/sh\n# written by rolegate loadtest/lab for the duration of apt-get install\nexit 101\n")
        os.chmod(POLICY_RC, 0o755)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        with open(APT_LOG, "w") as logf:
            rc = subprocess.run(["apt-get", "update", "-q"], stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env).returncode
            if rc == 0:
                rc = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs],
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env).returncode
    finally:
        if backup:
            shutil.move(backup, POLICY_RC)
        else:
            try:
                os.unlink(POLICY_RC)
            except FileNotFoundError:
                pass
    if rc != 0:
        with open(APT_LOG) as f:
            sys.stderr.write("".join(f.readlines()[-30:]))
        die(f"apt-get install {' '.join(pkgs)} failed (full log: {APT_LOG})")
    stop_default_services()
    left = missing()
    if left:
        die(f"installed packages but still missing binaries for: {' '.join(left)}")


def stop_default_services():
    """The distro's default instances (5432/3306/6379, etcd 2379, redis-sentinel 26379) must not
    be left running: they would take ports rolegate itself listens on. Called right after we
    installed packages."""
    if shutil.which("pg_lsclusters"):
        out = common.run(["pg_lsclusters", "--no-header"], check=False) or ""
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 4 and f[3].startswith("online"):
                log(f"stopping the distro's default PostgreSQL cluster {f[0]}/{f[1]}")
                common.ok(["pg_ctlcluster", f[0], f[1], "stop"])
    for pidf, unit in (("/run/mysqld/mysqld.pid", "mariadb"), ("/run/redis/redis-server.pid", "redis-server"),
                       ("/run/sentinel/redis-sentinel.pid", "redis-sentinel")):
        pid = common.read_pid(pidf)
        if pid and common.proc_state(pid) not in (None, "Z"):
            log(f"stopping the distro's default {unit} service")
            if os.access(f"/etc/init.d/{unit}", os.X_OK):
                common.ok([f"/etc/init.d/{unit}", "stop"])
    if os.path.isdir("/run/systemd/system"):
        for unit in ("postgresql", "mariadb", "redis-server", "redis-sentinel", "etcd", "patroni"):
            common.ok(["systemctl", "disable", "--now", "--quiet", unit])
