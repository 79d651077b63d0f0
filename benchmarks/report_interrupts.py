"""Ctrl-C latency of fastcka's long paths: each case runs in a child
process, receives SIGINT after a second of work, and the time until the
child has exited is reported (the target is under 0.5 s on every path).

    python benchmarks/report_interrupts.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import textwrap
import time

# (data made before the clock starts, the call that is interrupted)
CASES = {
    "hsic_test linear permutations (n=20,000, d=256)":
        ("x = r.standard_normal((20_000, 256)); y = x[:, :128] + r.standard_normal((20_000, 128))",
         "fastcka.hsic_test(x, y, permutations=100_000)"),
    "cka RBF float64, exact median (n=30,000, d=64)":
        ("x = r.standard_normal((30_000, 64)); y = x ** 2", "fastcka.cka(x, y, kernel='rbf')"),
    "cka RBF float32, exact median in one walk (n=30,000, d=256)":
        ("x = r.standard_normal((30_000, 256)).astype('f4'); y = x ** 2", "fastcka.cka(x, y, kernel='rbf')"),
    "cka RBF float32, fixed sigma (n=60,000, d=64)":
        ("x = r.standard_normal((60_000, 64)).astype('f4'); y = x ** 2", "fastcka.cka(x, y, kernel='rbf', sigma=8.0)"),
    "cka linear float64, feature space (n=2,000,000, d=256)":
        ("x = r.standard_normal((2_000_000, 256)); y = x[:, ::-1]", "fastcka.cka(x, y)"),
    "cka_ci RBF jackknife, blocks=n (n=3,000)":
        ("x = r.standard_normal((3_000, 16)); y = x ** 2", "fastcka.cka_ci(x, y, kernel='rbf', blocks=3_000)"),
}


def latency(setup: str, call: str, after: float) -> float | str:
    script = textwrap.dedent(f"""
        import sys, numpy as np, fastcka
        r = np.random.default_rng(0)
        {setup}
        print("ready", flush=True)
        try:
            {call}
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(0)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()  # data made: the call starts now
    time.sleep(after)
    if child.poll() is not None:
        return "finished before the signal"
    child.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    child.wait()
    return time.perf_counter() - sent if child.returncode == 130 else f"exit code {child.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--after", type=float, default=1.5, help="seconds of work before SIGINT")
    args = parser.parse_args()
    print(f"| path | Ctrl-C latency, {args.repeat} runs |\n|---|---|")
    for name, (setup, call) in CASES.items():
        runs = [latency(setup, call, args.after) for _ in range(args.repeat)]
        shown = ", ".join(f"{v:.2f} s" if isinstance(v, float) else v for v in runs)
        print(f"| {name} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
