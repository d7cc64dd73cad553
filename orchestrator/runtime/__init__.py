"""Running workflows: the scheduler, the runtime operations and read views. No Celery here."""
