"""Keep one local-stack service running, as systemd's Restart=on-failure does in deploy/systemd.

A service stops on purpose when it cannot go on safely: an internal error, or a broker that
fenced it after an outage longer than its session (exit 70, nothing committed; the input is
read again after a restart). `reformspor up` runs each service under this supervisor so that
the local stack comes back by itself, as a production one does.

    python -m services.localstack.supervise NAME -- COMMAND...

The supervisor and its service share one process group: `reformspor down` (SIGTERM to the
group) stops both, and the supervisor then does not restart anything.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

# A configuration or usage error: starting again cannot help (systemd: RestartPreventExitStatus=2).
NO_RESTART_EXIT_CODES = frozenset({0, 2})
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
# A run this long counts as healthy: the next failure starts the back-off from the beginning again.
HEALTHY_RUN_S = 60.0


def next_delay_s(previous_delay_s: float, ran_s: float) -> float:
    """Seconds to wait before the next start: 1 s after a first or a healthy run's failure, then doubling to 30 s."""
    if previous_delay_s <= 0 or ran_s >= HEALTHY_RUN_S:
        return FIRST_DELAY_S
    return min(previous_delay_s * 2, MAX_DELAY_S)


def should_restart(exit_code: int, stopping: bool) -> bool:
    """Restart after a failure, never after a clean stop, a usage error or while the stack is stopping."""
    return not stopping and exit_code not in NO_RESTART_EXIT_CODES


def describe_exit(exit_code: int) -> str:
    if exit_code < 0:
        return f"was killed by {signal.Signals(-exit_code).name}"
    return f"exited with {exit_code}"


class Supervisor:
    def __init__(self, name: str, command: list[str]):
        self.name = name
        self.command = command
        self.stopping = False
        self.child: subprocess.Popen | None = None

    def stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)  # also sent to the group by `down`; harmless twice

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        delay_s = 0.0
        restarts = 0
        while True:
            started = time.monotonic()
            self.child = subprocess.Popen(self.command)
            exit_code = self.child.wait()
            ran_s = time.monotonic() - started
            if not should_restart(exit_code, self.stopping):
                return 0 if self.stopping else exit_code
            delay_s = next_delay_s(delay_s, ran_s)
            restarts += 1
            print(f"supervisor: {self.name} {describe_exit(exit_code)} after {ran_s:.1f} s; "
                  f"starting it again in {delay_s:.0f} s (restart {restarts})", flush=True)
            deadline = time.monotonic() + delay_s
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.1)
            if self.stopping:
                return 0


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m services.localstack.supervise NAME -- COMMAND...", file=sys.stderr)
        return 2
    return Supervisor(argv[0], argv[2:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
