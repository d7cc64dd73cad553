"""The worker side: the Celery app, the tasks that execute steps, and the embedded worker."""
