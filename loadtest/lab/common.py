"""What every engine module shares: messages, waits, process control by pid, running commands
as the unprivileged lab user, files owned by it, and the lab's lock.

Only processes whose pid files live under $LAB_DIR are ever signalled, and every signal is
guarded by a check that the pid still runs the command line the lab started (a recycled pid is
left alone).
"""

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time


class LabError(Exception):
    """A failure the lab reports as `lab: error: MESSAGE` and exit status 1."""


def log(msg):
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    raise LabError(msg)


def now():
    """Wall-clock seconds, for the switchover/kill measurement lines (same clock as the tests)."""
    return time.time()


def stamp(t):
    return f"{t:.6f}"


def try_for(secs, cond, *args):
    """Runs COND every 0.1 s until it is true or SECS have passed. A condition that raises
    counts as false (a server that does not answer yet)."""
    deadline = time.monotonic() + secs
    while True:
        try:
            if cond(*args):
                return True
        except (LabError, OSError, subprocess.SubprocessError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def wait_for(secs, what, cond, *args):
    if not try_for(secs, cond, *args):
        die(f"timed out after {secs}s waiting for {what}")


# --- commands --------------------------------------------------------------------------------

def run(argv, timeout=30, env=None, input=None, check=True, capture=True, what=None):
    """Runs ARGV (stdin closed unless INPUT), returning stdout as text. Output a server's tool
    would print on stdout goes to our stderr when not captured: stdout is the lab's API."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        p = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE if capture else sys.stderr.fileno(),
                           stderr=subprocess.PIPE if capture else None,
                           env=full_env, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        if check:
            die(f"{what or argv[0]}: timed out after {timeout}s")
        return None
    if p.returncode != 0:
        if check:
            err = (p.stderr or "").strip() if capture else ""
            die(f"{what or ' '.join(argv[:3])} failed (exit {p.returncode}){': ' + err[-600:] if err else ''}")
        return None
    return p.stdout if capture else ""


def ok(argv, timeout=30, env=None, input=None, quiet=True):
    """True when ARGV exits 0 (its output discarded, or on stderr when not QUIET)."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        out = subprocess.DEVNULL if quiet else sys.stderr.fileno()
        p = subprocess.run(argv, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=out, stderr=subprocess.DEVNULL if quiet else None,
                           env=full_env, timeout=timeout, text=True)
        return p.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def spawn_detached(argv, out_path, env=None, owner=None):
    """Starts ARGV in a new session, stdin from /dev/null, stdout/stderr appended to OUT_PATH and
    no other fd inherited, so a server never holds our lock or a caller's pipe (which would make
    `$(lab.sh up)` hang) and is not hit by signals sent to the caller's process group."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    ids = {}
    if owner is not None:
        # exec'd directly as the lab user (runuser would stay in between as the parent, and its
        # pid is not the server's)
        uid, gid = owner.ids()
        ids = {"user": uid, "group": gid, "extra_groups": []}
    with open(out_path, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=full_env, cwd="/", **ids)


def run_detached(argv, out_path=None, timeout=120, env=None):
    """Like spawn_detached but waits for ARGV (e.g. `pg_ctl start`, a daemonizing redis-server);
    True when it exited 0. Its output goes to OUT_PATH, or to our stderr."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    out = open(out_path, "ab") if out_path else None
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out or sys.stderr.fileno(),
                             stderr=subprocess.STDOUT if out else None,
                             start_new_session=True, close_fds=True, env=full_env, cwd="/")
        try:
            return p.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            return False
    finally:
        if out:
            out.close()


# --- processes -------------------------------------------------------------------------------

def proc_state(pid):
    """R, S, T (stopped), Z (zombie), ... or None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s.rsplit(") ", 1)[1].split()[0]


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def proc_matches(pid, needle):
    """PID is a live (non-zombie) process whose command line contains NEEDLE."""
    if pid is None or not str(pid).isdigit():
        return False
    cmd = proc_cmdline(pid)
    if cmd is None or needle not in cmd:
        return False
    return proc_state(pid) not in (None, "Z", "X")


def pid_gone(pid, needle):
    return not proc_matches(pid, needle)


def pids_gone(pids):
    return all(proc_state(p) in (None, "Z", "X") for p in pids)


def read_pid(path):
    try:
        with open(path) as f:
            v = f.readline().strip()
        return int(v) if v.isdigit() else None
    except OSError:
        return None


def children_of(pid):
    """The pids whose parent is PID (from /proc; no procps needed)."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        if s.rsplit(") ", 1)[1].split()[1] == str(pid):
            kids.append(int(d))
    return kids


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_pid(pid, needle, what, term_secs=30, sig=signal.SIGTERM):
    """SIGCONT + SIGTERM, SIGKILL after TERM_SECS; waits until the pid is gone."""
    log(f"{what}: stopping (pid {pid})")
    signal_pid(pid, signal.SIGCONT)
    signal_pid(pid, sig)
    if not try_for(term_secs, pid_gone, pid, needle):
        log(f"{what}: did not stop within {term_secs} s, SIGKILL")
        signal_pid(pid, signal.SIGKILL)
        wait_for(10, f"{what} (pid {pid}) to die", pid_gone, pid, needle)


def kill_pid(pid, needle, what):
    signal_pid(pid, signal.SIGKILL)
    wait_for(10, f"{what} (pid {pid}) to die", pid_gone, pid, needle)


def port_in_use(port):
    """Something accepts TCP connections on 127.0.0.1:PORT."""
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def need_root(cmd, user):
    if os.geteuid() != 0:
        die(f"'{cmd}' must run as root (it installs packages and runs servers as {user})")


def other(node):
    return "B" if node == "A" else "A"


# --- the lab user and its files ----------------------------------------------------------------

class Owner:
    """The unprivileged OS user the servers run as (PostgreSQL refuses to run as root)."""

    def __init__(self, name):
        self.name = name

    def ids(self):
        p = pwd.getpwnam(self.name)
        return p.pw_uid, p.pw_gid

    def argv(self, *argv):
        return ["runuser", "-u", self.name, "--", *argv]

    def ensure(self):
        try:
            pwd.getpwnam(self.name)
            return
        except KeyError:
            pass
        log(f"creating system user {self.name}")
        run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", self.name], what="useradd")

    def write(self, path, text, mode=0o644):
        """Writes PATH owned by the lab user."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        uid, gid = self.ids()
        os.chown(path, uid, gid)

    def logfile(self, path):
        """Makes sure a log file exists and the lab user may append to it."""
        with open(path, "a"):
            pass
        uid, gid = self.ids()
        os.chown(path, uid, gid)
        return path

    def mkdir(self, path, mode=0o755):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        uid, gid = self.ids()
        os.chown(path, uid, gid)

    def install(self, src, dst, mode):
        shutil.copyfile(src, dst)
        os.chmod(dst, mode)
        uid, gid = self.ids()
        os.chown(dst, uid, gid)


# --- lock ------------------------------------------------------------------------------------

class Lock:
    """flock on $LAB_DIR.lock (beside the state dir, so `destroy` can hold it while deleting):
    serialises the commands that change servers. tests/support/lab.rs takes the same lock to
    read the lab without a command running underneath."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def take(self, secs=600):
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        deadline = time.monotonic() + secs
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    die(f"another lab.sh has held {self.path} for {secs // 60} minutes")
                time.sleep(0.1)


def executable(*paths):
    return all(os.access(p, os.X_OK) for p in paths)


def tail(path, lines=15):
    """The last LINES of a log on stderr, for a server that did not start."""
    try:
        with open(path, errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[-lines:]))
    except OSError:
        pass


class Gone(Exception):
    """A server exited while we waited for it to answer."""


def descendants(pid):
    """Every process below PID, deepest first (so a signal reaches children before parents)."""
    out = []
    for k in children_of(pid):
        out += descendants(k)
        out.append(k)
    return out


def write_pid(path, pid):
    with open(path, "w") as f:
        f.write(f"{pid}\n")


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
