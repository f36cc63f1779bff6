from .celery import app as celery_app

__all__ = ("celery_app", "package_version")


def package_version() -> str:
    """The installed version of OpenChargeback (pyproject.toml's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openchargeback")
    except PackageNotFoundError:
        return "0+unknown"
