"""Host failure: heartbeats, detection with a second opinion, and fencing (`manage.py watch_hosts`).

One process of its own, not a Celery worker (a heartbeat must never wait for a free worker), keeps
one thread per host that calls the host-side `heartbeat` verb every UNCLOUD_HEARTBEAT_INTERVAL_MS
over its own long-lived `serve` process. A heartbeat renews the host's fence lease, keeps its guard
running and tells it the current start generations (the host kills a copy a newer start outlived).
The main thread turns silence into states (Host.liveness), one writer for all of them:

    alive --silent > suspect_after--> suspect --its peers cannot reach it either--> dead
                                              --a peer still reaches it (underlay)--> partitioned
    dead, partitioned --a fence confirmed--> fenced --> the VM app restarts what can move
    any state but fenced --answers again--> alive
    fenced --answers again: alive when only its lease fenced it (its guard killed its guests);
             a Ceph blocklist stays until staff return the host (admin action "Return to service")

Fences, each recorded in Host.fence_log and the audit log:
- lease: the host's guard kills its guests once the lease runs out and the host is the one cut off;
  after lease + margin of silence the control plane counts the host's guests as dead.
- storage: `ceph osd blocklist add <its Ceph client address>` (run on a healthy host) before its RBD
  VMs start elsewhere; counts as a fence of a dead host (peers agree), not of a merely cut-off one,
  whose guests could still talk on the network until its guard kills them.
- power: the staff-configured command; exit status 0 counts as fenced.

More than UNCLOUD_HA_MASS_FAILURE_PERCENT of the hosts silent at once is not a host failure (a
switch, or the control plane's own network): nothing is declared dead, an Alarm row is raised.
The VM app plugs in through `hooks` (agents never imports vms).
"""

import dataclasses
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from accounts import audit
from agents.choices import HostLiveness, HostStatus
from agents.hostagent import HostAgent, HostError
from agents.hosts import connection_for
from agents.models import Alarm, Host
from agents.signals import host_available
from agents.transport import TransportError

log = logging.getLogger(__name__)

MASS_FAILURE_ALARM = "hosts_silent"
FAILED_STATES = (HostLiveness.PARTITIONED, HostLiveness.DEAD)
STORAGE_FENCE_RETRY_S = 5.0
HEARTBEAT_WRITE_S = 2.0  # Host.last_heartbeat is written at most this often
POWER_STARTED = "power started"


@dataclass
class Hooks:
    """What the VM app does at each turn (set in vms.apps; the defaults do nothing)."""

    # {vm uuid: current start generation} for the VMs placed on the host or reported by it.
    generations: Callable[[Host, list[str]], dict[str, int]] = lambda host, reported: {}
    # Does fencing this host need the Ceph blocklist (it runs VMs on RBD disks)?
    needs_storage_fence: Callable[[Host], bool] = lambda host: False
    host_failed: Callable[[Host], None] = lambda host: None  # dead or partitioned: tell customers
    host_fenced: Callable[[Host], None] = lambda host: None  # restart elsewhere what can move
    host_returned: Callable[[Host, bool], None] = lambda host, was_fenced: None
    # Guests whose qemu the host reported running and now does not (it exited or was killed).
    guests_died: Callable[[Host, list[str]], None] = lambda host, vm_uuids: None


hooks = Hooks()


def seconds(milliseconds: int) -> float:
    return milliseconds / 1000


def fence_log_entry(step: str, ok: bool, detail: str = "", **extra) -> dict:
    return {"at": timezone.now().isoformat(), "step": step, "ok": ok, "detail": detail[:1000], **extra}


def append_fence_log(host: Host, *entries: dict) -> None:
    with transaction.atomic():
        row = Host.objects.select_for_update().get(pk=host.pk)
        Host.objects.filter(pk=host.pk).update(fence_log=(row.fence_log + list(entries))[-200:])


def heartbeat_agent(host: Host) -> HostAgent:
    """An agent of the watcher's own: short calls, no give-up check (it is what decides). Connecting
    keeps the usual SSH timeout: a key exchange on a loaded host can take seconds, and a host whose
    every reconnect timed out would never be heard again (silence is timed apart from the calls)."""
    timeout = seconds(settings.UNCLOUD_HEARTBEAT_CALL_TIMEOUT_MS)
    connection_ = dataclasses.replace(connection_for(host), command_timeout=timeout)
    return HostAgent(connection_, host.state_dir)


class HostWatcher:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.hosts: dict[int, Host] = {}
        self.last_ok: dict[int, float] = {}
        self.last_written: dict[int, float] = {}
        self.reported: dict[int, dict] = {}
        self.pending_log: dict[int, list[dict]] = {}
        self.threads: dict[int, threading.Thread] = {}
        self.fencing: dict[int, dict] = {}
        # Hosts that answered since this watcher started: only these can be heard back from a failure.
        self.answered: set[int] = set()
        # Alive hosts this watcher has not finished its first call to: their silence waits for it.
        self.first_call_pending: set[int] = set()

    # --- the loop ------------------------------------------------------------------------------

    def run_forever(self) -> None:
        interval = seconds(settings.UNCLOUD_HEARTBEAT_INTERVAL_MS)
        while not self.stop.is_set():
            started = self.clock()
            try:
                close_old_connections()
                self.tick()
            except Exception:  # the watcher must outlive a database blip
                log.exception("host watcher tick failed")
            self.stop.wait(max(0.0, interval - (self.clock() - started)))
        for thread in list(self.threads.values()):
            thread.join(timeout=5)

    def tick(self) -> None:
        hosts = list(Host.objects.order_by("id"))
        with self.lock:
            self.hosts = {host.id: host for host in hosts}
        for host in hosts:
            self.first_seen(host)
            thread = self.threads.get(host.id)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._beat_loop, args=(host.id,), name=f"heartbeat-{host.name}",
                                          daemon=True)
                self.threads[host.id] = thread
                thread.start()
        self.evaluate(hosts)

    def first_seen(self, host: Host) -> None:
        """Time a host's silence from what the database remembers, so a restarted watcher goes on
        where the last one stopped: a failed host is not heard (and revived) before it answers, its
        lease keeps counting, and the fence steps already taken are not taken again."""
        with self.lock:
            if host.id in self.last_ok:
                return
            # A host added while the watcher runs (or alive when it starts) is silent from now on.
            self.last_ok[host.id] = self.clock()
            if host.liveness == HostLiveness.ALIVE:
                self.first_call_pending.add(host.id)
        if host.liveness == HostLiveness.ALIVE:
            return
        # The latest moment it can have answered: one heartbeat write (every HEARTBEAT_WRITE_S) after
        # its last_heartbeat, and suspect_after before it left `alive`. Its silence is never
        # overestimated, so a lease is never counted as run out early.
        latest = []
        if host.last_heartbeat:
            latest.append(host.last_heartbeat + timedelta(seconds=HEARTBEAT_WRITE_S
                                                          + seconds(settings.UNCLOUD_HEARTBEAT_INTERVAL_MS)))
        if host.liveness_since:
            latest.append(host.liveness_since - timedelta(seconds=seconds(settings.UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS)))
        if latest:
            silent_s = max(0.0, (timezone.now() - min(latest)).total_seconds())
            with self.lock:
                self.last_ok[host.id] = self.clock() - silent_s
        if host.liveness in FAILED_STATES:
            self.fencing[host.id] = fence_state_from_log(host, self.clock())

    # --- heartbeats (one thread per host) ------------------------------------------------------

    def heartbeat_spec(self, host: Host) -> dict:
        with self.lock:
            peers = sorted({other.underlay_address for other in self.hosts.values()
                            if other.id != host.id and other.underlay_address})
            reported = list(self.reported.get(host.id, {}))
        spec = {"lease_s": settings.UNCLOUD_FENCE_LEASE_SECONDS, "port": settings.UNCLOUD_HA_GUARD_PORT,
                "peers": peers, "generations": hooks.generations(host, reported)}
        if host.underlay_address:
            spec["listen"] = host.underlay_address
        return spec

    def _beat_loop(self, host_id: int) -> None:
        interval = seconds(settings.UNCLOUD_HEARTBEAT_INTERVAL_MS)
        timeout = seconds(settings.UNCLOUD_HEARTBEAT_CALL_TIMEOUT_MS)
        agent, agent_key, answered = None, None, False
        try:
            while not self.stop.is_set():
                started = self.clock()
                with self.lock:
                    host = self.hosts.get(host_id)
                if host is None:
                    return
                key = (connection_for(host), host.state_dir)
                if key != agent_key:
                    agent, agent_key = heartbeat_agent(host), key
                # After a miss the next call may start a new `serve` process on the host, which a
                # loaded host takes seconds to do: it gets longer (silence is timed apart anyway).
                call_timeout = timeout if answered else max(timeout, settings.UNCLOUD_SSH_CONNECT_TIMEOUT)
                answered = False
                try:
                    answer = agent.call("heartbeat", self.heartbeat_spec(host), timeout=call_timeout)
                except (TransportError, HostError) as error:
                    log.debug("heartbeat of %s missed: %s", host.name, error)
                except Exception:
                    log.exception("heartbeat of %s failed", host.name)
                    close_old_connections()  # a database restart broke this thread's connection
                else:
                    answered = True
                    self._answered(host, answer)
                self.first_call_ended(host_id)
                self.stop.wait(max(0.0, interval - (self.clock() - started)))
        finally:
            connection.close()

    def _answered(self, host: Host, answer: dict) -> None:
        now = self.clock()
        before = self.reported.get(host.id, {})  # only this host's thread writes its entry
        entries = []
        if answer.get("fenced"):
            fenced = answer["fenced"]
            entries.append(fence_log_entry("guard", True, fenced.get("why", ""), killed=fenced.get("killed", [])))
        if answer.get("killed_stale"):
            entries.append(fence_log_entry("stale copies killed", True, "started again elsewhere",
                                           killed=answer["killed_stale"]))
        with self.lock:
            self.last_ok[host.id] = now
            self.answered.add(host.id)
            self.reported[host.id] = answer.get("guests", {})
            if entries:
                self.pending_log.setdefault(host.id, []).extend(entries)
            write = now - self.last_written.get(host.id, 0.0) >= HEARTBEAT_WRITE_S
            if write:
                self.last_written[host.id] = now
        if write:
            Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now())
        self._notice_dead_guests(host, before, answer.get("guests", {}))

    def _notice_dead_guests(self, host: Host, before: dict, now: dict) -> None:
        """A qemu that died shows in the next heartbeat (a second), not at the next reconcile: a guest
        not running now that was running, or not seen yet (it may have died before this watcher's
        first heartbeat, or between its start and the next beat); the hook keeps only VMs meant to run."""
        died = [vm_uuid for vm_uuid, guest in now.items()
                if not guest.get("running") and before.get(vm_uuid, {}).get("running", True)]
        died += [vm_uuid for vm_uuid, guest in before.items() if guest.get("running") and vm_uuid not in now]
        if died:
            try:
                hooks.guests_died(host, died)
            except Exception:
                log.exception("host %s: acting on guests that died failed (the reconciler will)", host.name)

    # --- decisions (main thread only) ----------------------------------------------------------

    def first_call_ended(self, host_id: int) -> None:
        with self.lock:
            self.first_call_pending.discard(host_id)

    def silence(self, host: Host) -> float:
        with self.lock:
            if host.id in self.first_call_pending:
                # The first call opens SSH and may start a `serve` process: seconds on a loaded host,
                # which would call every host suspect (and raise the mass-failure alarm) at each
                # watcher start. A host silent since then is timed from the start once that call ends.
                return 0.0
            return self.clock() - self.last_ok.get(host.id, self.started)

    def evaluate(self, hosts: list[Host]) -> None:
        suspect_after = seconds(settings.UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS)
        silence = {host.id: self.silence(host) for host in hosts}
        with self.lock:
            pending, self.pending_log = self.pending_log, {}
        for host in hosts:
            if pending.get(host.id):
                append_fence_log(host, *pending[host.id])
                for entry in pending[host.id]:
                    audit.record(None, f"host.{entry['step'].replace(' ', '_')}", target=host,
                                 detail=entry["detail"], killed=entry.get("killed", []))
        # A host emptied for maintenance may be switched off: its silence is no failure.
        watched = [host for host in hosts if host.status != HostStatus.MAINTENANCE]
        silent = [host for host in watched if silence[host.id] > suspect_after]
        mass = len(watched) >= 2 and 100 * len(silent) > settings.UNCLOUD_HA_MASS_FAILURE_PERCENT * len(watched)
        self._alarm(mass, silent, watched)
        for host in hosts:
            if silence[host.id] <= suspect_after:
                with self.lock:
                    answered = host.id in self.answered
                if host.liveness == HostLiveness.ALIVE or answered:
                    self._heard(host)
            elif host in watched:
                self._silent(host, silence[host.id], mass, hosts, silence)

    def _transition(self, host: Host, new: str, **fields) -> bool:
        with transaction.atomic():
            updated = Host.objects.filter(pk=host.pk, liveness=host.liveness).update(
                liveness=new, liveness_since=timezone.now(), **fields)
            if not updated:
                return False
            old, host.liveness = host.liveness, new
            for name, value in fields.items():
                setattr(host, name, value)
            audit.record(None, f"host.{new}", target=host, old=old)
        log.warning("host %s: %s -> %s", host.name, old, new)
        return True

    def _heard(self, host: Host) -> None:
        if host.liveness == HostLiveness.ALIVE:
            # Returned by staff (host.return) or never gone: the next failure is fenced afresh.
            self.fencing.pop(host.id, None)
            return
        if host.liveness == HostLiveness.FENCED:
            if host.storage_fenced_address:
                return  # Ceph still refuses it: staff return it (and lift the blocklist)
            if self._transition(host, HostLiveness.ALIVE, fenced_at=None):
                self.fencing.pop(host.id, None)
                hooks.host_returned(host, True)
            return
        was_failed = host.liveness in FAILED_STATES
        if self._transition(host, HostLiveness.ALIVE):
            self.fencing.pop(host.id, None)
            if was_failed:
                hooks.host_returned(host, False)
            else:  # only suspect a moment: creates parked meanwhile ("no host has room") may go there now
                host_available.send(sender=Host, host=host)

    def _silent(self, host: Host, silent_s: float, mass: bool, hosts: list[Host], silence: dict) -> None:
        if host.liveness == HostLiveness.ALIVE:
            self.fencing.pop(host.id, None)  # a new failure: no fence of an earlier one counts
            self._transition(host, HostLiveness.SUSPECT)
        if mass or host.liveness == HostLiveness.FENCED:
            return
        if host.liveness == HostLiveness.SUSPECT:
            opinion = self.second_opinion(host, hosts, silence)
            if opinion is None:
                return
            with transaction.atomic():  # a watcher killed here leaves both done or neither
                if self._transition(host, HostLiveness.PARTITIONED if opinion else HostLiveness.DEAD):
                    hooks.host_failed(host)
        if host.liveness in FAILED_STATES:
            self.fence(host, silent_s, hosts, silence)

    def healthy_peers(self, host: Host, hosts: list[Host], silence: dict) -> list[Host]:
        suspect_after = seconds(settings.UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS)
        return [other for other in hosts if other.id != host.id and other.liveness == HostLiveness.ALIVE
                and silence[other.id] <= suspect_after]

    def second_opinion(self, host: Host, hosts: list[Host], silence: dict) -> bool | None:
        """Do its peers still reach it over the underlay? True, False, or None (nobody could say)."""
        if not host.underlay_address:
            return None
        answers = {}
        for peer in self.healthy_peers(host, hosts, silence)[:2]:
            try:
                result = heartbeat_agent(peer).call(
                    "peer-probe", {"addresses": [host.underlay_address], "port": settings.UNCLOUD_HA_GUARD_PORT,
                                   "timeout_s": 1.0},
                    timeout=seconds(settings.UNCLOUD_HEARTBEAT_CALL_TIMEOUT_MS) + 1)
            except (TransportError, HostError) as error:
                log.warning("peer %s could not probe %s: %s", peer.name, host.name, error)
                continue
            answers[peer.name] = result["peers"][host.underlay_address]
        if not answers:
            return None
        reachable = any(answer["reachable"] for answer in answers.values())
        append_fence_log(host, fence_log_entry(
            "second opinion", True, f"peers {'reach' if reachable else 'cannot reach'} it over the underlay",
            peers=answers))
        return reachable

    # --- fencing -------------------------------------------------------------------------------

    def fence(self, host: Host, silent_s: float, hosts: list[Host], silence: dict) -> None:
        state = self.fencing.setdefault(host.id, {})
        entries = []
        if host.power_fence_command and "power" not in state:
            # Logged before it runs: a watcher restarted mid-command never powers the host off twice.
            append_fence_log(host, fence_log_entry(POWER_STARTED, True, "running the power fence command"))
            state["power"] = run_power_fence(host)
            entries.append(state["power"])
        storage = state.get("storage")
        storage_due = storage is None or (not storage["ok"] and self.clock() - storage["tried"] >= STORAGE_FENCE_RETRY_S)
        if settings.UNCLOUD_HA_CEPH_FENCE and storage_due and hooks.needs_storage_fence(host):
            state["storage"] = {**self.storage_fence(host, hosts, silence), "tried": self.clock()}
            entries.append({key: value for key, value in state["storage"].items() if key != "tried"})
        lease_s = settings.UNCLOUD_FENCE_LEASE_SECONDS + settings.UNCLOUD_FENCE_MARGIN_SECONDS
        confirmed = []
        if state.get("power", {}).get("ok"):
            confirmed.append("power")
        if host.liveness == HostLiveness.DEAD and state.get("storage", {}).get("ok"):
            confirmed.append("storage")
        if silent_s >= lease_s:
            confirmed.append("lease")
            entries.append(fence_log_entry("lease", True, f"silent {silent_s:.1f} s, lease {lease_s} s with margin: "
                                           "its guard has killed its guests (or the host is down)"))
        if entries:
            append_fence_log(host, *entries)
        if not confirmed:
            return
        storage_address = state["storage"]["address"] if state.get("storage", {}).get("ok") else ""
        with transaction.atomic():  # fenced and its VMs' evacuations started, or neither
            if self._transition(host, HostLiveness.FENCED, fenced_at=timezone.now(),
                                storage_fenced_address=storage_address):
                audit.record(None, "host.fence_confirmed", target=host, by=confirmed, silent_s=round(silent_s, 1))
                hooks.host_fenced(host)

    def storage_fence(self, host: Host, hosts: list[Host], silence: dict) -> dict:
        address = host.ceph_client_address or host.underlay_address
        if not address:
            return fence_log_entry("storage", False, "no Ceph client address known for this host")
        detail = "no healthy host to run the blocklist from"
        for peer in self.healthy_peers(host, hosts, silence):
            try:
                answer = heartbeat_agent(peer).call("ceph-blocklist", ceph_blocklist_spec(address, "add"), timeout=30)
            except (TransportError, HostError) as error:
                detail = f"{peer.name}: {error}"
                continue
            if answer.get("listed"):
                return fence_log_entry("storage", True, f"ceph osd blocklist add {address} (by {peer.name})",
                                       address=address)
            detail = f"{peer.name}: {address} not in the blocklist after adding it"
        return fence_log_entry("storage", False, detail, address=address)

    # --- the mass-failure alarm ----------------------------------------------------------------

    def _alarm(self, mass: bool, silent: list[Host], hosts: list[Host]) -> None:
        open_alarm = Alarm.objects.filter(kind=MASS_FAILURE_ALARM, cleared__isnull=True).first()
        if mass and open_alarm is None:
            names = ", ".join(host.name for host in silent)
            message = (f"{len(silent)} of {len(hosts)} hosts stopped answering at once ({names}). That looks like "
                       "a network or control-plane failure, not failed hosts: nothing is evacuated or fenced by "
                       "the control plane; hosts keep their guests while their peers also miss the control plane.")
            with transaction.atomic():
                Alarm.objects.create(kind=MASS_FAILURE_ALARM, message=message,
                                     details={"silent": [host.name for host in silent], "hosts": len(hosts)})
                audit.record(None, "alarm.raised", kind=MASS_FAILURE_ALARM, message=message)
            log.error("ALARM: %s", message)
        elif not mass and open_alarm is not None:
            with transaction.atomic():
                Alarm.objects.filter(pk=open_alarm.pk).update(cleared=timezone.now())
                audit.record(None, "alarm.cleared", kind=MASS_FAILURE_ALARM)
            log.warning("alarm cleared: hosts answer again")


def fence_state_from_log(host: Host, clock_now: float) -> dict:
    """The fence steps already taken for the host's current failure (its fence log since it
    failed), as HostWatcher.fencing holds them: a restarted watcher neither repeats nor forgets them."""
    state: dict = {}
    since = host.liveness_since
    now = timezone.now()
    for entry in host.fence_log:
        try:
            at = datetime.fromisoformat(entry["at"])
        except (KeyError, TypeError, ValueError):
            continue
        if since is not None and at < since:
            continue
        if entry.get("step") == POWER_STARTED:
            state["power"] = fence_log_entry("power", False, "the watcher stopped while the power fence ran; "
                                             "not run again (see the fence log)")
        elif entry.get("step") == "power":
            state["power"] = entry
        elif entry.get("step") == "storage":
            state["storage"] = {**entry, "tried": clock_now - max(0.0, (now - at).total_seconds())}
    return state


def ceph_blocklist_spec(address: str, action: str) -> dict:
    return {"ceph_conf": settings.UNCLOUD_RBD_CEPH_CONF, "user": settings.UNCLOUD_RBD_USER, "address": address,
            "action": action}


def run_power_fence(host: Host) -> dict:
    argv = host.power_fence_command
    if not isinstance(argv, list) or not argv or not all(isinstance(part, str) for part in argv):
        return fence_log_entry("power", False, "power_fence_command must be a non-empty list of strings")
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=settings.UNCLOUD_POWER_FENCE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as error:
        return fence_log_entry("power", False, f"{argv[0]}: {error}")
    output = (completed.stdout + completed.stderr).strip()[-500:]
    return fence_log_entry("power", completed.returncode == 0, f"{argv[0]} exited {completed.returncode}: {output}")
