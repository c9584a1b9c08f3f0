"""The things the benchmark drives: dockerd itself and the proxies in front of it.

Each target is a UNIX socket plus the process behind it, so the harness can
read the process's memory, file descriptors and CPU time from /proc.
"""
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time

import rawhttp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DSFW_COMMAND = ("twistd -n --pidfile= dsfw --host {socket} --target {docker} "
                "--policyDir policies/")
ALL_TARGETS = ("direct", "socat", "haproxy", "dsfw")


class TargetError(Exception):
    """A target could not be started or never answered /_ping."""


# --- /proc readings -------------------------------------------------------

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _status_kb(pid, field):
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def process_tree(pid):
    """The pid and its live descendants (socat forks one child per connection)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue  # it exited while we looked
        pids.append(p)
        for task in tasks:
            todo += [int(c) for c in _read(f"/proc/{p}/task/{task}/children").split()]
    return pids


def tree_rss_kb(pid):
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid))


def tree_fds(pid):
    total = 0
    for p in process_tree(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total


def tree_cpu_seconds(pid):
    """utime+stime of the tree, plus what reaped children used (socat's)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for i, p in enumerate(process_tree(pid)):
        fields = _read(f"/proc/{p}/stat").rpartition(")")[2].split()
        # fields[11:15] are utime stime cutime cstime.  A live child's time is
        # not yet in its parent's cutime: count the root's four, the others' two.
        end = 15 if i == 0 else 13
        if len(fields) >= end:
            total += sum(int(x) for x in fields[11:end])
    return total / tick


class PeakRSS:
    """Peak resident memory of a target over a block, in kB.

    For a single process the kernel's own high-water mark (VmHWM, reset
    through /proc/PID/clear_refs) is exact; forking targets are also sampled
    every 20 ms summed over the tree.  The larger of the two is reported.
    """

    def __init__(self, pid, can_reset):
        self._pid = pid
        self._can_reset = can_reset
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, tree_rss_kb(self._pid))
            self._stop.wait(0.02)

    def __enter__(self):
        if self._can_reset:
            with open(f"/proc/{self._pid}/clear_refs", "w") as f:
                f.write("5")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self._can_reset:
            self._peak = max(self._peak, _status_kb(self._pid, "VmHWM"))

    @property
    def kb(self):
        return self._peak


# --- targets ----------------------------------------------------------------

class Target:
    """A socket to send requests to, and the pid whose resources we read."""

    name = "?"
    can_reset_hwm = True

    def __init__(self, workdir, docker_socket):
        self.workdir = workdir
        self.docker_socket = docker_socket
        self.socket = os.path.join(workdir, f"{self.name}.sock")
        self.proc = None
        self.log_path = os.path.join(workdir, f"{self.name}.log")

    @property
    def pid(self):
        return self.proc.pid

    def command(self):
        raise NotImplementedError

    def start(self, timeout=30.0):
        argv = self.command()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetError(f"{self.name} exited with {self.proc.returncode}: "
                                  f"{self.log_tail()}")
            try:
                if rawhttp.request(self.socket, "GET", "/_ping").status == 200:
                    return
            except OSError as e:
                last = e
            time.sleep(0.1)
        self.stop()
        raise TargetError(f"{self.name} did not answer /_ping in {timeout:.0f}s ({last}); "
                          f"{self.log_tail()}")

    def log_tail(self, n=1500):
        return _read(self.log_path)[-n:]

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def env(self):
        return None

    def version(self):
        return ""


class Direct(Target):
    """dockerd's own socket: the limit every proxy is compared with."""

    name = "direct"
    can_reset_hwm = False  # a daemon the harness does not own: only read it

    def __init__(self, workdir, docker_socket):
        super().__init__(workdir, docker_socket)
        self.socket = docker_socket
        self._pid = None

    def start(self, timeout=30.0):
        if rawhttp.request(self.socket, "GET", "/_ping").status != 200:
            raise TargetError(f"dockerd at {self.socket} does not answer /_ping")
        pid = _read("/var/run/docker.pid").strip()
        if not pid:
            for p in filter(str.isdigit, os.listdir("/proc")):
                if _read(f"/proc/{p}/comm").strip() == "dockerd":
                    pid = p
                    break
        self._pid = int(pid) if pid else None

    @property
    def pid(self):
        return self._pid

    def stop(self):
        pass


class Socat(Target):
    """A raw byte relay (fork per connection): the cost of one more hop."""

    name = "socat"

    def command(self):
        return ["socat", f"UNIX-LISTEN:{self.socket},fork,mode=600,backlog=1024",
                f"UNIX-CONNECT:{self.docker_socket}"]

    def version(self):
        out = subprocess.run(["socat", "-V"], capture_output=True, text=True).stdout
        for line in out.splitlines():  # "socat version 1.7.4.4 on 06 Nov 2022 08:15:51"
            words = line.split()
            if "version" in words[:-1]:
                return words[words.index("version") + 1]
        return ""


class HAProxy(Target):
    """HAProxy configured the way docker-socket-proxy does it (haproxy.cfg.in)."""

    name = "haproxy"

    def command(self):
        with open(os.path.join(HERE, "haproxy.cfg.in")) as f:
            cfg = f.read()
        cfg = cfg.replace("@SOCKET@", self.socket).replace("@DOCKER_SOCKET@", self.docker_socket)
        path = os.path.join(self.workdir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        return ["haproxy", "-db", "-f", path]

    def version(self):
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
        return out.split()[2] if out else ""


class Dsfw(Target):
    """dsfw itself, run with twistd -n from the repo root (its pid is twistd's)."""

    name = "dsfw"
    command_template = DSFW_COMMAND

    def command(self):
        return shlex.split(self.command_template.format(socket=self.socket,
                                                        docker=self.docker_socket))

    def env(self):
        return dsfw_env()

    def version(self):
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--",
                                "dsfw", "twisted", "policies"],
                               capture_output=True, text=True).stdout.strip()
        return f"git {out}" + (" with uncommitted changes" if dirty else "") if out else ""


def dsfw_env():
    """The repo root first on PYTHONPATH: twistd finds twisted/plugins/dsfw_plugin.py
    and the dsfw package of this tree even when dsfw is not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


KINDS = {"direct": Direct, "socat": Socat, "haproxy": HAProxy, "dsfw": Dsfw}


def missing_tool(name):
    """Why a target cannot run on this machine, or None."""
    tool = {"socat": "socat", "haproxy": "haproxy", "dsfw": "twistd"}.get(name)
    if tool and not shutil.which(tool):
        return f"{tool} is not installed"
    if name == "dsfw":
        probe = subprocess.run(["twistd", "dsfw", "--help"], cwd=REPO, env=dsfw_env(),
                               capture_output=True, text=True)
        if probe.returncode != 0:
            return "`twistd dsfw --help` fails: " + (probe.stderr or probe.stdout)[-200:]
    return None
