from django.db import models


class NetworkStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DELETING = "deleting", "Deleting"


class IngressProtocol(models.TextChoices):
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"
    ICMPV6 = "icmpv6", "ICMPv6"
    ANY = "any", "Any"


class NICStatus(models.TextChoices):
    ATTACHING = "attaching", "Attaching"
    ATTACHED = "attached", "Attached"
    DETACHING = "detaching", "Detaching"
    ERROR = "error", "Error"


class IPv4Status(models.TextChoices):
    PENDING = "pending", "Being applied"
    MAPPED = "mapped", "Mapped"
    UNMAPPED = "unmapped", "Not mapped"
    ERROR = "error", "Error"
