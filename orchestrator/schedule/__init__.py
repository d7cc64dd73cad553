"""Schedules: the arithmetic of fire times (pure) and the Celery beat scheduler that fires them."""
