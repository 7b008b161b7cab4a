"""A tiny harness for the interop suite: checks counted into one closing
`N passed, N failed` line, processes started on 127.0.0.1 and always
stopped, every wait bounded."""
import os, signal, socket, subprocess, sys, time, traceback, urllib.request

RESULTS = {"passed": 0, "failed": 0}
PROCS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(args, cwd=None, log=None):
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


def http_get(url, timeout=5, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_http(url, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            http_get(url, timeout=1)
            return True
        except Exception:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def wait_for(what, cond, timeout=30, interval=0.2):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def check(name, fn):
    t = time.time()
    try:
        fn()
        RESULTS["passed"] += 1
        print(f"PASS {name} ({time.time() - t:.1f}s)", flush=True)
    except Exception:  # noqa: BLE001 - report and go on with the next check
        RESULTS["failed"] += 1
        print(f"FAIL {name} ({time.time() - t:.1f}s)", flush=True)
        traceback.print_exc()


def finish():
    stop_all()
    print(f"interop: {RESULTS['passed']} passed, {RESULTS['failed']} failed", flush=True)
    sys.exit(1 if RESULTS["failed"] else 0)
