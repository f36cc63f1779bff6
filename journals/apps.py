from django.apps import AppConfig


class JournalsConfig(AppConfig):
    name = "journals"
