from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"
    verbose_name = "Images and disks"

    def ready(self):
        from images import validation, workflows  # noqa: F401  register the images' workflows
