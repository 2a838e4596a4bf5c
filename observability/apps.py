from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Metrics and graphs"

    def ready(self):
        from celery.signals import task_postrun, task_prerun

        from agents.models import Operation
        from agents.signals import operation_finished, operation_step_ran
        from observability import recording

        operation_step_ran.connect(recording.on_operation_step_ran, sender=Operation,
                                   dispatch_uid="observability.step_ran")
        operation_finished.connect(recording.on_operation_finished, sender=Operation,
                                   dispatch_uid="observability.operation_finished")
        task_prerun.connect(recording.on_task_prerun, dispatch_uid="observability.task_prerun")
        task_postrun.connect(recording.on_task_postrun, dispatch_uid="observability.task_postrun")
