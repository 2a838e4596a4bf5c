from rest_framework import serializers

from observability.series import RANGES


class RangeSerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=list(RANGES), default="1h")


class SeriesSerializer(serializers.Serializer):
    unit = serializers.CharField()
    points = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()),
                                   help_text="[unix time, rate] pairs, oldest first")


class UsageSerializer(serializers.Serializer):
    vm = serializers.UUIDField()
    range = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    source = serializers.ChoiceField(choices=["samples", "prometheus"],
                                     help_text="Where the series come from: the control plane's kept samples, "
                                               "or Prometheus (UNCLOUD_METRICS_PROMETHEUS_URL)")
    memory_bytes = serializers.IntegerField(allow_null=True, help_text="Resident memory at the last sample")
    series = serializers.DictField(child=SeriesSerializer(),
                                   help_text="cpu (cores busy), network_receive/network_transmit and "
                                             "disk_read/disk_write (bytes per second)")
