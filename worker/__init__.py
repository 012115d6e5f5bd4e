"""The worker side: Celery app, tasks, and the plain modules they call.

Importing this package imports nothing heavy; ``worker.app`` builds the Celery app.
"""
