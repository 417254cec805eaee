"""The churn script: a seeded, pre-computed list of transitions, so the operator and the Go
floor are driven through exactly the same sequence.

Each step picks a random pod not touched within `cooldown` seconds (so every transition
has its own etcd event to wait for, never one coalesced away by the next) and moves it on:
ready -> not ready (or, one time in ten, a graceful delete), not ready -> ready,
terminating -> force-deleted, created again and made ready. Half the steps (on average)
bring a pod back, so there are about as many registrations as deregistrations at any N.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import Enum

from bench.population import State


class Action(Enum):
    UNREADY = "unready"  # Ready=False via the status subresource: the key must go
    READY = "ready"  # Ready=True: the key must come
    TERMINATE = "terminate"  # graceful delete (deletionTimestamp): the key must go
    RECREATE = "recreate"  # force delete + create + Ready=True: the key must come

    @property
    def expect(self) -> str:
        """The etcd event this transition must cause: "P" (put) or "D" (delete)."""
        return "P" if self in (Action.READY, Action.RECREATE) else "D"

    @property
    def pod_state(self) -> str:
        """What a pod watcher sees after it: "R" serving, "U" not ready, "T" terminating."""
        return {Action.UNREADY: "U", Action.TERMINATE: "T"}.get(self, "R")

    @property
    def after(self) -> State:
        return {
            Action.UNREADY: State.UNREADY,
            Action.READY: State.READY,
            Action.TERMINATE: State.TERMINATING,
            Action.RECREATE: State.READY,
        }[self]


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # seconds after the start of the churn
    pod: str
    action: Action


def _take(pool: list[str], rng: random.Random) -> str:
    j = rng.randrange(len(pool))
    pool[j], pool[-1] = pool[-1], pool[j]
    return pool.pop()


def churn(
    pods: list[str],
    rate: float,
    duration: float,
    *,
    cooldown: float = 1.0,
    delete_share: float = 0.1,
    seed: int = 6,
) -> list[Step]:
    """Every other step (on average) brings a pod back, the others take one down, so
    registrations and deregistrations are about as many whatever N is."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    state = dict.fromkeys(pods, State.READY)
    up = list(pods)  # ready pods free to take down
    down: list[str] = []  # pods free to bring back
    cooling: deque[tuple[float, str]] = deque()
    steps: list[Step] = []
    for i in range(int(rate * duration)):
        at = i / rate
        while cooling and cooling[0][0] <= at:
            pod = cooling.popleft()[1]
            (up if state[pod] is State.READY else down).append(pod)
        bring_back = bool(down) and (not up or rng.random() < 0.5)
        if not bring_back and not up:
            continue
        pod = _take(down if bring_back else up, rng)
        if state[pod] is State.READY:
            action = Action.TERMINATE if rng.random() < delete_share else Action.UNREADY
        elif state[pod] is State.UNREADY:
            action = Action.READY
        else:
            action = Action.RECREATE
        state[pod] = action.after
        steps.append(Step(at, pod, action))
        cooling.append((at + cooldown, pod))
    return steps
