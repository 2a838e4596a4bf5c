from django.db import models


class ConsoleKind(models.TextChoices):
    VNC = "vnc", "Graphical (VNC)"
    SERIAL = "serial", "Serial"


class SessionEnd(models.TextChoices):
    """Why a console session ended; the gateway also sends it to the browser as the close reason."""

    CLIENT_CLOSED = "client_closed", "Closed by the user"
    CONSOLE_CLOSED = "console_closed", "The VM's console closed"
    IDLE = "idle", "Idle for too long"
    MAX_DURATION = "max_duration", "Reached the maximum duration"
    VM_STOPPED = "vm_stopped", "The VM stopped or was deleted"
    VM_MOVED = "vm_moved", "The VM moved to another host"
    ACCESS_LOST = "access_lost", "The user lost access to the VM"
    CREDENTIAL_GONE = "credential_gone", "The token was revoked or the login ended"
    HOST_UNREACHABLE = "host_unreachable", "The VM's host could not be reached"
    GATEWAY_STOPPED = "gateway_stopped", "The console gateway stopped"
    GATEWAY_LOST = "gateway_lost", "The console gateway vanished"
    STAFF_ENDED = "staff_ended", "Ended by staff"
